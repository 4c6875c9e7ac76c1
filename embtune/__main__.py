"""``python -m embtune`` (and ``torchrun -m embtune train ...``) run the same CLI as the console script."""

from embtune.cli import main

main()
