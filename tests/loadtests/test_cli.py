"""The sizing CLI's own decisions: when a step is measured again, and its defaults."""

from __future__ import annotations

from loadtests.sizing.__main__ import disturbed, parser
from loadtests.sizing.select import Step


def test_a_step_is_measured_again_when_it_broke_or_other_work_ran() -> None:
    quiet = Step(1, 300, 40, 90, 150, 0, requests=6000, other_cpu=0.05)
    busy = Step(1, 200, 60, 150, 250, 0, requests=4000, other_cpu=1.2)
    broken = Step(1, 0, 0, 0, 0, 0)

    assert disturbed(quiet) is None
    assert disturbed(busy) == "other work used 1.20 CPUs meanwhile"
    assert disturbed(broken) == "the step completed no requests"


def test_defaults_sweep_one_to_twice_the_cpus_plus_one() -> None:
    args = parser(cpus=2).parse_args([])

    assert (args.workers, args.users, args.p95_ms, args.margin) == ("1-5", None, 200, 0.05)
    assert (args.stack, args.apply, str(args.out)) == ("dev", None, "build/sizing")
