"""``python -m jepactl`` (also what ``torchrun -m jepactl`` runs on every rank)."""

from jepactl.cli import main

if __name__ == "__main__":
    main()
