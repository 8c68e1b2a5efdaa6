"""The SecAgg+ benchmark's report: tables (a), (b) and (c), and the issue's goals."""

from __future__ import annotations

from typing import Any

from harness import print_table as markdown_table

from secagg_parts.workload import CLIENT_STAGES, FLOWER_STAGES, SERVER_STAGES


def _fmt_d(d: int) -> str:
    return (
        f"{d // 1_000_000}M" if d % 1_000_000 == 0 else f"{d // 1000}k" if d % 1000 == 0 else str(d)
    )


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    markdown_table(header, rows, pad=True)


def print_skipped(cells: list[dict]) -> None:
    for c in cells:
        if "skipped" in c:
            print(f"    * n={c['n']} d={_fmt_d(c['d'])}: skipped, {c['skipped']}")


def _span(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}x" if values else "-"


def print_summary(results: dict[str, Any]) -> None:
    """The issue's goals against this run's figures."""
    done = [c for c in results["fedops"] if "skipped" not in c]
    print("\nGoals")
    print(
        f"  fedops <= 2x its crypto floor: client {_span([c['client_ratio'] for c in done])} "
        f"({_span([c['client_ratio_no_encode'] for c in done])} without encode_update; "
        f"{_span([c['client_ratio_semi_honest'] for c in done])} of the floor without the "
        "signatures), "
        f"server {_span([c['server_ratio'] for c in done])}"
    )
    big = [c for c in done if c["d"] >= 1_000_000 and not c.get("dropped")]
    if big:
        secagg = ", ".join(f"{c['consistency_share']:.1%}" for c in big)
        whole = ", ".join(
            f"{c['consistency_share_round']:.1%} (training {_ms(c['train_s'])} ms)" for c in big
        )
        print(
            f"  consistency check <= 10% of a round at d = 1M: {secagg} of the SecAgg+ client "
            f"work alone; {whole} of a round with the site's default local training"
        )
    fl = results.get("flower")
    if isinstance(fl, dict):
        ok = [f for f in fl["inprocess"] if "skipped" not in f]
        print(
            "  Flower / fedops >= 10x (in-process): "
            f"client {_span([f['client_ratio'] for f in ok])}, "
            f"server {_span([f['server_ratio'] for f in ok])}, "
            f"whole protocol {_span([f['total_ratio'] for f in ok])}"
        )
        ray = fl.get("ray")
        if isinstance(ray, dict) and "ratio" in ray:
            print(f"  Flower / fedops >= 10x (Ray simulation, n={ray['n']}): {ray['ratio']:.1f}x")


def fedops_row(c: dict[str, Any]) -> list[str]:
    if "skipped" in c:
        return [str(c["n"]), _fmt_d(c["d"])] + ["-"] * 10 + ["skipped*"]
    cf, sf = c["client_floor"], c["server_floor"]
    return [
        str(c["n"]),
        _fmt_d(c["d"]),
        f"{c['k']}/{c['threshold']}",
        f"{c['dropped']}",
        _ms(c["client_s"]),
        _ms(sum(cf.values())),
        f"{c['client_ratio']:.2f}x",
        f"{c['client_ratio_no_encode']:.2f}x",
        f"{c['server_s']:.3f}",
        f"{sum(sf.values()):.3f}",
        f"{c['server_ratio']:.2f}x",
        f"{c['max_error']:.1e}",
        f"reps {c['reps']}",
    ]


def report_fedops(cells: list[dict]) -> None:
    """(a): fedops against its crypto floor, one row a size."""
    print_table(
        "(a) fedops SecAgg+ vs the crypto floor, per round (client: mean over all n clients, each "
        "run and timed; 'w/o encode': client time without encode_update, which the floor omits)",
        [
            "n",
            "d",
            "k/t",
            "dropped",
            "client ms",
            "floor ms",
            "ratio",
            "w/o encode",
            "server s",
            "floor s",
            "ratio",
            "max err",
            "note",
        ],
        [fedops_row(c) for c in cells],
    )
    print_skipped(cells)


def floor_parts_row(c: dict[str, Any]) -> list[str]:
    cf, sf, cs = c["client_floor"], c["server_floor"], c["client_stage_s"]
    return [
        str(c["n"]),
        _fmt_d(c["d"]),
        str(c["dropped"]),
        f"{_ms(cf['prg_s'])} / {_ms(cf['add_s'])} / {_ms(cf['agree_s'])} / {_ms(cf['sign_s'])}",
        " / ".join(_ms(cs[s]) for s in CLIENT_STAGES),
        f"{sf['prg_s']:.3f} / {sf['add_s']:.3f} / {sf['agree_s']:.3f}",
        " / ".join(f"{c['server_stage_s'][s]:.3f}" for s in SERVER_STAGES),
    ]


def report_floor_parts(cells: list[dict], units: dict[str, dict[str, float]]) -> None:
    """(a), continued: the floor's parts, where fedops' time goes, the unit costs."""
    print_table(
        "    floor parts and where fedops' time goes",
        [
            "n",
            "d",
            "dropped",
            "client floor PRG/add/X25519/Ed25519 ms",
            f"client {'/'.join(CLIENT_STAGES)} ms",
            "server floor PRG/add/X25519 s",
            f"server {'/'.join(SERVER_STAGES)} s",
        ],
        [floor_parts_row(c) for c in cells if "skipped" not in c],
    )
    for d, u in units.items():
        print(
            f"    unit costs at d={_fmt_d(int(d))} (median): expand {u['expand_s'] * 1e3:.3f} ms "
            f"({4 * (int(d) + 1) / u['expand_s'] / 1e9:.1f} GB/s), add {u['add_s'] * 1e3:.3f} ms, "
            f"X25519 exchange {u['exchange_s'] * 1e6:.1f} us, Ed25519 sign "
            f"{u['sign_s'] * 1e6:.1f} us / verify {u['verify_s'] * 1e6:.1f} us"
        )


def flower_row(f: dict[str, Any]) -> list[str]:
    if "skipped" in f:
        return [str(f["n"]), _fmt_d(f["d"]), str(f.get("dropped", 0))] + ["-"] * 7 + ["skipped*"]
    return [
        str(f["n"]),
        _fmt_d(f["d"]),
        str(f["dropped"]),
        _ms(f["fedops_client_s"]),
        _ms(f["client_s"]),
        f"{f['client_ratio']:.1f}x",
        f"{f['fedops_server_s']:.3f}",
        f"{f['server_s']:.3f}",
        f"{f['server_ratio']:.1f}x",
        f"{f['total_ratio']:.1f}x",
        f"{f['max_error']:.1e}",
    ]


def report_flower(fl: dict[str, Any]) -> None:
    """(b): fedops against Flower in-process, then Flower's stages and the Ray runs."""
    print_table(
        f"(b) fedops vs Flower {fl['version']} SecAgg+, in-process "
        "(Flower's SecAggPlusWorkflow + secaggplus_mod over an in-memory Grid)",
        [
            "n",
            "d",
            "dropped",
            "fedops client ms",
            "Flower client ms",
            "Flower/fedops",
            "fedops server s",
            "Flower server s",
            "Flower/fedops",
            "total CPU Flower/fedops",
            "Flower max err",
        ],
        [flower_row(f) for f in fl["inprocess"]],
    )
    print_skipped(fl["inprocess"])
    rows = [
        [
            str(f["n"]),
            _fmt_d(f["d"]),
            str(f["dropped"]),
            " / ".join(_ms(f["client_stage_s"][s]) for s in FLOWER_STAGES),
            _ms(f["fit_s"]),
            f"{f['aggregate_fit_s']:.3f}",
        ]
        for f in fl["inprocess"]
        if "skipped" not in f
    ]
    print_table(
        "    Flower's client stages (setup/share_keys/collect_masked_vectors/unmask; the fit "
        "call is excluded) and its legacy aggregate_fit (inside its server time)",
        ["n", "d", "dropped", "client stages ms", "excluded fit ms", "aggregate_fit s"],
        rows,
    )
    report_ray(fl.get("ray"))


def report_ray(ray: dict[str, Any] | str | None) -> None:
    if isinstance(ray, str):
        print(f"\n    Ray simulation: skipped: {ray}")
    elif ray:
        print(
            f"\n    Ray simulation (run_simulation, n={ray['n']}, d={_fmt_d(ray['d'])}, "
            f"{ray['rounds']} rounds, 2 actors):"
        )
        for mode in ("secagg", "plain"):
            r = ray[mode]
            if r["status"] != "ok":
                print(f"      {mode}: {r['status']}")
                for line in r.get("log_tail", []):
                    print(f"        {line}")
            else:
                fits = ", ".join(f"{x:.2f}" for x in r["fit_s"])
                print(
                    f"      {mode:6s}: fit stage per round {fits} s "
                    f"(process {r['process_s']:.0f} s)"
                )
        if "secagg_overhead_s" in ray:
            print(
                f"      SecAgg+ cost per round (median of rounds 2..R, secagg - plain): "
                f"{ray['secagg_overhead_s']:.2f} s wall; fedops' whole protocol for the same "
                f"n, d (server + all clients, one thread): {ray['fedops_total_s']:.3f} s "
                f"-> {ray['ratio']:.1f}x"
            )


def bytes_rows(b: dict[str, Any]) -> list[list[str]]:
    rows = []
    rows.append(
        [str(b["n"]), _fmt_d(b["d"]), "fedops"]
        + [f"{b['fedops'].get(s, 0):,.0f}" for s in ("keys", "shares", "masked", "reveal")]
        + [f"{b['fedops_total']:,.0f}", f"{b['plain']:,.0f}", f"{b['fedops_ratio']:.4f}"]
    )
    if "flower" in b:
        rows.append(
            [str(b["n"]), _fmt_d(b["d"]), "Flower"]
            + [f"{b['flower'].get(s, 0):,.0f}" for s in FLOWER_STAGES]
            + [f"{b['flower_total']:,.0f}", f"{b['plain']:,.0f}", f"{b['flower_ratio']:.4f}"]
        )
    return rows


def report_bytes(by: dict[str, Any]) -> None:
    """(c): the bytes each client uploads per round, against the plain update's."""
    print_table(
        "(c) bytes uploaded per client per round (mean of the first clients' replies)",
        [
            "n",
            "d",
            "framework",
            "stage 1 keys",
            "stage 2 shares",
            "stage 3 masked",
            "stage 4 reveal",
            "total",
            "plain float32",
            "total/plain",
        ],
        [row for b in by["cells"] for row in bytes_rows(b)],
    )
    print(f"    fedops sizes: {by['method']}")
    if any("flower" in b for b in by["cells"]):
        print(
            "    Flower sizes: serde.recorddict_to_proto(reply.content).ByteSize() of its replies"
        )


def report(results: dict[str, Any]) -> None:
    cells = results["fedops"]
    report_fedops(cells)
    report_floor_parts(cells, results["units"])
    fl = results.get("flower")
    if isinstance(fl, str):
        print(f"\n(b) Flower: skipped: {fl}")
    elif fl:
        report_flower(fl)
    report_bytes(results["bytes"])
