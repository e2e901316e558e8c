"""`python -m scaling`: the `scaling` command line."""

from scaling.cli import main_entry

if __name__ == "__main__":
    main_entry()
