"""`python cli.py ...` from a checkout, the same as the `pyrohvae` command."""

from pyrohvae.cli import main

if __name__ == "__main__":
    main()
