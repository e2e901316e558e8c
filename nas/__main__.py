"""`python -m nas`: the `nas` command line."""

from nas.cli import main_entry

if __name__ == "__main__":
    main_entry()
