"""The `hf-mtl` command line."""

import argparse

from . import __version__


def main(argv=None):
    parser = argparse.ArgumentParser(prog="hf-mtl", description="Multi-task transformer models for the HF ecosystem.")
    parser.add_argument("--version", action="version", version=f"hf-mtl {__version__}")
    parser.parse_args(argv)
    parser.print_help()


if __name__ == "__main__":
    main()
