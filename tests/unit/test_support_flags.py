"""The keyword launcher of tests/support/procs.py spells the flags a user types."""

from __future__ import annotations

from procs import flags

from fedops.cli.parser import build_parser


def test_keywords_become_the_flags_the_parser_reads():
    spelled = flags(rounds=3, min_clients=8, insecure=True, publish_participants=False, kit=None)
    assert spelled == ["--rounds", "3", "--min-clients", "8", "--insecure"]
    args = build_parser().parse_args(["coordinator", *spelled])
    published = vars(args)["privacy.publish_participants"]  # a schema section's flag
    assert (args.rounds, args.min_clients, args.insecure, published) == (
        3,
        8,
        True,
        False,
    )
