"""``python -m promptaudit`` (also what ``accelerate launch -m promptaudit`` runs)."""

from promptaudit.cli import main

if __name__ == "__main__":  # importing this module (e.g. doctest collection) runs nothing
    main()
