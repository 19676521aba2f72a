"""``python -m promptaudit`` (also what ``accelerate launch -m promptaudit`` runs)."""

from promptaudit.cli import main

main()
