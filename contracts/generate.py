"""Write JSON Schema and an AsyncAPI 3.0 document from the contract models.

``python -m contracts.generate`` writes them; ``--check`` exits 1 if the committed files
drift from the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contracts import api, console
from contracts.envelope import Envelope
from contracts.events import EVENT_TYPES
from contracts.topics import REPLAYS, TOPICS, topic_for

SCHEMA_DIR = Path(__file__).parent / "schema"
API_MODELS: tuple[type[BaseModel], ...] = (
    api.SubmitDossier,
    api.DossierAccepted,
    api.SupplementDossier,
    api.RequestSupplement,
    api.EndDossier,
    api.DossierView,
    api.ProcedureList,
    api.ConsultationView,
    api.ReplyRequest,
    api.NotificationView,
    api.TakeStep,
    api.CompleteStep,
    api.HandOverRequest,
    api.DecideDossier,
    api.RequestFee,
    api.FeePaid,
    api.MarkResultReady,
    api.ReturnResult,
    api.ConfirmApology,
    api.RouteView,
    api.WorkItem,
    api.Problem,
    api.ResendNotification,
    api.SmsReceipt,
    api.SmsReceiptAccepted,
    api.InboundRejectView,
    console.ConsoleStatus,
    console.EventPage,
    console.DossierPage,
    console.DossierTimeline,
    console.LagReport,
    console.DeadLetterSummary,
    console.DeadLetterDetail,
    console.ReplayDeadLetter,
    console.DiscardDeadLetter,
    console.ActionAccepted,
    console.SlaBoard,
    console.Figures,
    console.ConsoleLogin,
)


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


REF_TEMPLATE = "#/components/schemas/{model}"


def component_schemas() -> tuple[dict[str, Any], dict[str, str]]:
    """Every model's JSON Schema as ``components.schemas``, nested models included: one
    schema per model, referred to as ``#/components/schemas/Name`` (a document-local
    ``$defs`` of a model's own schema would not resolve once moved into the document).
    Returns the schemas and, per event type, the name of its data schema."""
    models: list[type[BaseModel]] = [Envelope, *(m for _, m in sorted(EVENT_TYPES.items()))]
    refs, top = models_json_schema([(m, "validation") for m in models], ref_template=REF_TEMPLATE)
    schemas: dict[str, Any] = top.get("$defs", {})
    names = {
        event_type: refs[(model, "validation")]["$ref"].rsplit("/", 1)[1]
        for event_type, model in EVENT_TYPES.items()
    }
    return dict(sorted(schemas.items())), names


def asyncapi() -> dict[str, Any]:
    """An AsyncAPI 3.0 document: one channel per topic, one message per event type."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages_by_topic: dict[str, dict[str, Any]] = {t.name: {} for t in TOPICS}
    components_messages: dict[str, Any] = {}
    schemas, data_schema = component_schemas()
    for event_type, model in sorted(EVENT_TYPES.items()):
        key = event_type.replace(".", "_")
        components_messages[key] = {
            "name": event_type,
            "title": model.__name__,
            "summary": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else "",
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "event_type": {"const": event_type},
                    "schema_version": {"const": str(model.schema_version)},
                    "correlation_id": {"type": "string"},
                },
            },
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/Envelope"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": event_type},
                            "data": {"$ref": f"#/components/schemas/{data_schema[event_type]}"},
                        },
                    },
                ]
            },
        }
        messages_by_topic[topic_for(event_type).name][key] = {
            "$ref": f"#/components/messages/{key}"
        }
    every_message = {k: v for m in messages_by_topic.values() for k, v in m.items()}
    for replay in REPLAYS.values():  # a replay is any event its consumer dead-lettered
        messages_by_topic[replay.name] = dict(sorted(every_message.items()))
    for topic in TOPICS:
        cid = topic.name.replace(".", "_").replace("-", "_")
        channels[cid] = {
            "address": topic.name,
            "description": f"{topic.description} ({topic.partitions} partitions; "
            "key: dossier code)",
            "messages": messages_by_topic[topic.name],
        }
        operations[f"publish_{cid}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{cid}"},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Liên thông events",
            "version": "1.0.0",
            "description": "Events exchanged by intake, routing, consultation and notification.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": components_messages, "schemas": schemas},
    }


def render() -> dict[Path, str]:
    """Every generated file and its content."""
    files: dict[Path, str] = {SCHEMA_DIR / "envelope.json": _dump(Envelope.model_json_schema())}
    for event_type, model in EVENT_TYPES.items():
        files[SCHEMA_DIR / "events" / f"{event_type}.json"] = _dump(model.model_json_schema())
    for m in API_MODELS:
        files[SCHEMA_DIR / "api" / f"{m.__name__}.json"] = _dump(m.model_json_schema())
    files[SCHEMA_DIR / "asyncapi.json"] = _dump(asyncapi())
    return files


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        drift = [
            str(p) for p, text in files.items() if not p.exists() or p.read_text("utf-8") != text
        ]
        existing = {p for p in SCHEMA_DIR.rglob("*.json")}
        drift += [str(p) for p in existing - set(files)]
        if drift:
            print("contracts drifted from models; run `make contracts`:", *drift, sep="\n  ")
            return 1
        return 0
    for old in SCHEMA_DIR.rglob("*.json"):
        if old not in files:
            old.unlink()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    print(f"wrote {len(files)} files under {SCHEMA_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
