"""`python -m mnist_bp` runs the command-line tool."""

from mnist_bp.cli import main

if __name__ == "__main__":
    main()
