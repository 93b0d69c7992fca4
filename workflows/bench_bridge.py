"""``armflow bench bridge``: latency of the controller bridge, measured against its floor in the same run.

* ``<t>_rtt_*`` (= ``roundtrip_p50_us_<t>``): CHUNK -> ACK round trip through the full server path (client
  encode, DEALER, ROUTER, decode + validation + session/lease checks, ACK; the servo hand-off follows the
  ACK) for ``t`` in ipc, tcp (loopback), paced at ``rate_hz`` like a fast policy loop (back-to-back chunks
  at thousands per second would measure the servo's chunk-insertion load, not latency);
* ``<t>_floor_*`` (= ``floor_echo_p50_us_<t>``): the floor, a plain process-to-process pyzmq echo of the
  same CHUNK frames: a bare ROUTER in its own process (own context) sends every frame back to a DEALER on
  a context of its own in the bench process, as a new user would write it. Timed in the same loop as the
  bridge round trip, the two alternating which goes first, so machine load hits both alike;
  ``roundtrip_ratio_<t>`` = full / floor at p50; ``<t>_stale_chunks``: chunks refused ``stale`` or ``not_armed``
  because the machine stalled longer than a chunk spans or than T_cmd (left out of the timings; 0 on a sane box);
* ``<t>_hb_rtt_p50_us``: HEARTBEAT round trip (no servo hand-off), timed right after the pair (warm);
* ``<t>_estop_latency_*``: ESTOP sent -> servo latched (e-stop jumps the command queue);
* ``servo_period_err_*``: |actual - nominal| servo tick period at ``servo_rate_hz`` while serving;
  ``servo_sched_<t>``: the tick thread's scheduling class (deadline, fifo or other);
* ``safety_max_ratio``: ``{arm: {mode: {limit: ratio}}}``, the largest ratio to each limit of the limits
  file over ``safety_sequences`` random wild setpoint sequences per mode through ``SafetyLayer.filter``
  and the real driver (the fake arm and the lockstep sim Panda; ``target_*``: the joint targets sent to
  the sim arm's servos), see ``armflow.control.safety_audit``.
Goals (bridge.md): p50 within 3x of the floor; servo p99 error <= 1 ms; safety ratios <= 1.0, on the targets
and on the measured sim states alike (the tests allow 1e-3 of numerics).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq
from omegaconf import DictConfig

from armflow.control import channel, protocol as P
from armflow.control.client import BridgeClient, BridgeError
from armflow.control.launch import ServerProcess
from armflow.control.server import ServerConfig


def _echo_main(endpoint: str, conn) -> None:
    """The floor's server: a bare ROUTER that sends back every frame it gets (a user's first pyzmq echo)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.bind(endpoint)
    conn.send_bytes(sock.last_endpoint)
    while True:
        frames = sock.recv_multipart()
        if frames[1] == b"stop":
            break
        sock.send_multipart(frames)
    sock.close()
    ctx.term()


def _servo_policy(io_pid: int) -> str:
    """The scheduling class of the servo process's tick thread (the I/O process's child), for the record."""
    try:
        servo = int(open(f"/proc/{io_pid}/task/{io_pid}/children").read().split()[0])
        policy = os.sched_getscheduler(servo) & ~os.SCHED_RESET_ON_FORK
    except (OSError, IndexError, ValueError):
        return "unknown"
    return {os.SCHED_OTHER: "other", os.SCHED_FIFO: "fifo", 6: "deadline"}.get(policy, str(policy))


def _percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    x = np.asarray(samples_ns, float) / 1e3
    return {"p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)),
            "p999": float(np.percentile(x, 99.9))}


class FloorEcho:
    """The echo server in its own process, and a DEALER on a context of its own (not the bridge client's,
    whose I/O thread also carries the state stream) to time it."""

    def __init__(self, endpoint: str):
        ctx = channel.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_echo_main, args=(endpoint, child), daemon=True)
        self.proc.start()
        self.endpoint = parent.recv_bytes().decode()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(self.endpoint)

    def roundtrip(self, frames: list) -> int:
        t0 = time.perf_counter_ns()
        self.sock.send_multipart(frames)
        self.sock.recv_multipart()
        return time.perf_counter_ns() - t0

    def close(self) -> None:
        self.sock.send_multipart([b"stop"])
        self.proc.join(2.0)
        if self.proc.is_alive():
            self.proc.kill()
        self.sock.close()
        self.ctx.term()


def _chunk_roundtrip(client: BridgeClient, q: np.ndarray, horizon: int) -> int | None:
    """One CHUNK -> ACK round trip [ns]; None if it was refused ``stale`` or ``not_armed`` (the box stalled
    for longer than the chunk spans, 50 ms waypoints, or than T_cmd: on a loaded machine a benchmark must not
    die of it; it re-arms and counts them)."""
    acts = np.repeat(q[None], horizon, axis=0)  # the policy's output: made before the clock starts
    t0 = time.perf_counter_ns()
    try:
        client.send_chunk(acts, client.server_now_ns() + 20_000_000, 50_000_000, "joint_pos")
    except BridgeError as exc:
        if exc.code not in ("stale", "not_armed"):
            raise
        if exc.code == "not_armed":  # the watchdog held the arm: this process stalled longer than T_cmd
            client.arm("joint_pos")
        return None
    return time.perf_counter_ns() - t0


def _estop_latencies_us(client: BridgeClient, trials: int) -> list[float]:
    """ESTOP sent -> the servo latched ESTOP (its transition time stamp), re-ARMed between trials."""
    out = []
    for _ in range(max(1, trials)):
        client.drain_events()
        t0 = time.monotonic_ns()
        client.estop("bench")
        deadline = time.monotonic() + 2.0
        hit = None
        while hit is None and time.monotonic() < deadline:
            hit = next((d for k, d in client.drain_events() if k == "state" and d["new"] == "ESTOP"), None)
        if hit is None:
            raise RuntimeError("bench bridge: no ESTOP transition within 2 s")
        out.append((hit["t_ns"] - t0) / 1e3)
        client.arm("joint_pos")
    return out


def bench_transport(kind: str, cfg: DictConfig, tmp: Path) -> tuple[dict, dict]:
    endpoint = f"ipc://{tmp}/{kind}-bridge" if kind == "ipc" else "tcp://127.0.0.1:*"
    floor_ep = f"ipc://{tmp}/{kind}-floor" if kind == "ipc" else "tcp://127.0.0.1:*"
    scfg = ServerConfig(robot="fake_arm", robot_options={"rate_hz": float(cfg.servo_rate_hz)}, endpoint=endpoint,
                        servo_rate_hz=float(cfg.servo_rate_hz), rt_priority=int(cfg.rt_priority),
                        lease_timeout_ms=10_000)
    floor = FloorEcho(floor_ep)
    with ServerProcess(scfg) as sp:
        client = BridgeClient(sp.endpoint, t_cmd_ms=500)
        client.connect()
        client.arm("joint_pos")
        policy = _servo_policy(sp.proc.pid)
        q = client.read_state().joint_pos_rad
        sample = P.encode("CHUNK", {"chunk_id": 1, "obs_seq": 0, "t0_ns": 1, "dt_ns": 1, "action_space": "joint_pos"},
                          {"actions": np.repeat(q[None], int(cfg.chunk_horizon), axis=0)}, seq=1, session="0" * 16)
        sample = [bytes(f) for f in sample]
        for _ in range(int(cfg.warmup)):
            floor.roundtrip(sample)
            _chunk_roundtrip(client, q, int(cfg.chunk_horizon))
        floor_ns, bridge_ns, hb_ns, n_stale = [], [], [], 0
        period_s = 1.0 / float(cfg.rate_hz) if float(cfg.rate_hz) > 0 else 0.0  # 0: back to back
        next_t = time.perf_counter()
        for i in range(int(cfg.roundtrips)):  # floor and bridge alternate, paced like a (fast) policy loop
            if i % 2 == 0:  # alternate the order: whichever goes first after the sleep wakes up cold
                floor_ns.append(floor.roundtrip(sample))
                bridge_ns.append(_chunk_roundtrip(client, q, int(cfg.chunk_horizon)))
            else:
                bridge_ns.append(_chunk_roundtrip(client, q, int(cfg.chunk_horizon)))
                floor_ns.append(floor.roundtrip(sample))
            if bridge_ns[-1] is None:
                bridge_ns.pop()
                n_stale += 1
            if i % 4 == 0:
                t0 = time.perf_counter_ns()
                client.heartbeat()
                hb_ns.append(time.perf_counter_ns() - t0)
            if period_s:
                next_t += period_s
                time.sleep(max(0.0, next_t - time.perf_counter()))
        estop_us = _estop_latencies_us(client, int(cfg.estop_trials))
        deadline = time.monotonic() + float(cfg.servo_seconds)
        while time.monotonic() < deadline:
            client.heartbeat()
            time.sleep(0.02)
        status = dict(client.latest_state() and client.status)
        client.disarm()
        client.close()
    floor.close()
    fl, br = _percentiles_us(floor_ns), _percentiles_us(bridge_ns)
    res = {f"{kind}_rtt_p50_us": br["p50"], f"{kind}_rtt_p99_us": br["p99"], f"{kind}_rtt_p999_us": br["p999"],
           f"{kind}_floor_p50_us": fl["p50"], f"{kind}_floor_p99_us": fl["p99"], f"{kind}_floor_p999_us": fl["p999"],
           f"{kind}_hb_rtt_p50_us": _percentiles_us(hb_ns)["p50"], f"{kind}_rtt_over_floor_p50": br["p50"] / fl["p50"],
           f"{kind}_estop_latency_p50_us": float(np.median(estop_us)),
           f"{kind}_estop_latency_max_us": float(np.max(estop_us)),
           f"floor_echo_p50_us_{kind}": fl["p50"], f"roundtrip_p50_us_{kind}": br["p50"],
           f"roundtrip_ratio_{kind}": br["p50"] / fl["p50"],
           f"servo_period_err_p99_us_{kind}": float(status["period_err_p99_us"]), f"{kind}_stale_chunks": n_stale,
           f"servo_sched_{kind}": policy}
    return res, status


def _wild_setpoints(mode: str, q0: np.ndarray, rng: np.random.Generator, n_ticks: int) -> np.ndarray:
    """Held setpoints far beyond every limit (as the property tests draw them)."""
    out = []
    while len(out) < n_ticks:
        u = rng.uniform(-1, 1, 7)
        sp = {"joint_pos": lambda: q0 + 3.0 * u[: len(q0)], "joint_vel": lambda: 5.0 * u[: len(q0)],
              "ee_pose": lambda: np.concatenate([[0.3, 0, 0.45] + np.array([1.5, 1.5, 1.1]) * u[:3], u[3:] + [1e-3, 0, 0, 0]]),
              "ee_delta": lambda: 1.5 * u[:6]}[mode]()
        out += [sp] * int(rng.integers(5, 200))
    return np.array(out[:n_ticks])


def bench_safety(cfg: DictConfig, limits_name: str = "sim_panda") -> dict:
    """``{arm: {mode: {limit: max ratio}}}`` over random sequences (see the module docstring)."""
    from armflow.control.fake_arm import FakeArm
    from armflow.control.limits import load_limits
    from armflow.control.safety import SafetyLayer
    from armflow.control.safety_audit import drive, limit_ratios, merge_max
    from armflow.hardware.sim_arm import SimArmConfig, SimArmDriver

    lim, dt_s, rng = load_limits(limits_name), 1.0 / float(cfg.servo_rate_hz), np.random.default_rng(0)
    sim = SimArmDriver(SimArmConfig(rate_hz=float(cfg.servo_rate_hz)))
    sim.connect()
    arms = {"fake_arm": (FakeArm(rate_hz=float(cfg.servo_rate_hz)), None),
            "sim_panda": (sim, lambda: sim.data.ctrl[: sim.dof].copy())}
    out: dict = {}
    for arm, (driver, targets) in arms.items():
        layer = SafetyLayer(lim, driver.info(), fk=driver.forward_pose)
        driver.set_motion_limits(layer.motion_limits())
        for mode in ("joint_pos", "joint_vel", "ee_pose", "ee_delta"):
            worst: dict = {}
            for _ in range(int(cfg.safety_sequences)):
                driver.reset(0)
                sps = _wild_setpoints(mode, driver.read_state().joint_pos_rad, rng, int(cfg.safety_ticks))
                worst = merge_max(worst, limit_ratios(drive(driver, layer, mode, sps, dt_s, targets), layer, dt_s))
            out.setdefault(arm, {})[mode] = {k: round(v, 4) for k, v in worst.items()}
            print(f"[bench bridge] safety {arm} {mode}: " + ", ".join(f"{k} {v:.3f}" for k, v in worst.items()),
                  flush=True)
    sim.close()
    return out


def main(cfg: DictConfig) -> dict:
    from armflow.workflows.common import bench_line, write_json

    results: dict = {}
    servo = {}
    with tempfile.TemporaryDirectory(prefix="armflow-bench-") as tmp:
        for kind in cfg.transports:
            if kind not in ("ipc", "tcp"):
                raise SystemExit(f"armflow bench bridge: transport {kind!r}; valid: ipc, tcp")
            res, status = bench_transport(kind, cfg, Path(tmp))
            results.update(res)
            servo[kind] = status
            print(f"[bench bridge] {kind}: round trip p50 {res[f'{kind}_rtt_p50_us']:.0f} us, floor (pyzmq echo) "
                  f"{res[f'{kind}_floor_p50_us']:.0f} us: {res[f'roundtrip_ratio_{kind}']:.2f}x; servo p99 period "
                  f"error {status['period_err_p99_us']:.0f} us (servo tick thread {res[f'servo_sched_{kind}']})",
                  flush=True)
    first = servo[cfg.transports[0]]
    results.update(servo_rate_hz=float(cfg.servo_rate_hz), servo_ticks=int(first["ticks"]),
                   servo_period_err_p50_us=float(first["period_err_p50_us"]),
                   servo_period_err_p99_us=float(first["period_err_p99_us"]))
    if int(cfg.safety_sequences) > 0:
        results["safety_max_ratio"] = bench_safety(cfg)
    write_json(Path(cfg.out) / "bench_bridge.json", results)
    print(bench_line(results))
    return results
