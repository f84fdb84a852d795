from services.intake.app import SPEC
from services.runtime.service import main

main(SPEC)
