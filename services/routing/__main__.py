from services.routing.app import SPEC
from services.runtime.service import main

main(SPEC)
