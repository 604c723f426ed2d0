"""convnet cache: list the decoded-image cache, and delete what is no longer needed."""
from __future__ import annotations

import argparse
from datetime import datetime

from convnet.errors import ConfigError

HELP = "List the decoded-image cache ($CONVNET_HOME/cache) and delete entries (--prune, --clear)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--prune", action="store_true",
                      help="delete the entries whose image folder no longer exists, or was never recorded (entries "
                      "made before convnet recorded folders; any entry in use records its folder when next read)")
    what.add_argument("--clear", action="store_true",
                      help="delete every entry (folders are decoded again on their next use); only files named "
                      "like entries are deleted, and a cache folder that is a link is refused")


def run(args: argparse.Namespace) -> int:
    from convnet.data import cache
    from convnet.files import size_text

    found = cache.entries()
    if args.prune or args.clear:
        gone = [e for e in found if args.clear or not e.source_exists]
        for entry in gone:
            try:
                cache.remove(entry.key)
            except OSError as e:
                raise ConfigError(
                    f"Could not delete {entry.key} from {cache.cache_home() / 'cache'} ({e.strerror}); "
                    "check that folder's permissions."
                ) from None
        print(f"deleted {len(gone)} of {len(found)} entries, {size_text(sum(e.bytes for e in gone))}, "
              f"from {cache.cache_home() / 'cache'}")
        return 0
    print(f"{len(found)} entries, {size_text(sum(e.bytes for e in found))}, in {cache.cache_home() / 'cache'}")
    for e in found:
        state = "" if e.source_exists else "  (--prune deletes it)"
        when = datetime.fromtimestamp(e.written).strftime("%Y-%m-%d %H:%M")
        print(f"{size_text(e.bytes):>10}  {when}  {e.source or '(folder not recorded)'}{state}")
    return 0
