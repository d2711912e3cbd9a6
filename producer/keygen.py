"""``hashbridge keygen``: make the owner's secret key; prints only its public key id."""
from __future__ import annotations

import argparse
import sys

from shared.errors import KeyFileError
from shared.hashspec import key_id

from producer.keys import KEY_BYTES, write_key


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hashbridge keygen", description=(
        "Write a new random hashing key with mode 0600. The key never leaves this machine; "
        "frames carry only its key id. Losing it means starting a new key space."))
    parser.add_argument("--out", required=True, help="key file to create")
    parser.add_argument("--force", action="store_true", help="replace an existing key file")
    parser.add_argument("--bytes", type=int, default=KEY_BYTES, help="key length (default 32)")
    args = parser.parse_args(argv)
    try:
        key = write_key(args.out, force=args.force, nbytes=args.bytes)
    except KeyFileError as exc:
        print(f"hashbridge keygen: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (mode 0600); key id {key_id(key).hex()}")
    return 0
