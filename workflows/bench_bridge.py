"""``armflow bench bridge``: latency of the controller bridge, measured against its floor in the same run.

* ``<t>_rtt_*``: CHUNK -> ACK round trip through the full server path (client encode, DEALER, ROUTER,
  decode + validation + session/lease checks, hand-off to the servo process, ACK) for ``t`` in ipc,
  tcp (loopback);
* ``<t>_floor_*``: the same bytes echoed by a bare pyzmq ROUTER in another process (the floor);
* ``<t>_hb_rtt_p50_us``: HEARTBEAT round trip (no servo hand-off);
* ``servo_period_err_*``: |actual - nominal| servo tick period at ``servo_rate_hz`` while serving.
Goals (bridge.md): p50 within 3x of the floor; servo p99 error <= 1 ms.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import zmq
from omegaconf import DictConfig

from armflow.control import channel, protocol as P
from armflow.control.client import BridgeClient
from armflow.control.launch import ServerProcess
from armflow.control.server import ServerConfig


def _echo_main(endpoint: str, conn) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.bind(endpoint)
    conn.send_bytes(sock.last_endpoint)
    while True:
        frames = sock.recv_multipart()
        if frames[1] == b"stop":
            break
        sock.send_multipart([frames[0], frames[1]])  # reply: one small frame, like an ACK


def _percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    x = np.asarray(samples_ns, float) / 1e3
    return {"p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)),
            "p999": float(np.percentile(x, 99.9))}


class FloorEcho:
    """A bare ROUTER echo server in its own process, and a DEALER to time it."""

    def __init__(self, endpoint: str):
        ctx = channel.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_echo_main, args=(endpoint, child), daemon=True)
        self.proc.start()
        self.endpoint = parent.recv_bytes().decode()
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(self.endpoint)

    def roundtrip(self, frames: list) -> int:
        t0 = time.perf_counter_ns()
        self.sock.send_multipart(frames, copy=False)
        self.sock.recv_multipart()
        return time.perf_counter_ns() - t0

    def close(self) -> None:
        self.sock.send_multipart([b"stop"])
        self.proc.join(2.0)
        self.sock.close()


def _chunk_roundtrip(client: BridgeClient, q: np.ndarray, horizon: int) -> int:
    acts = np.repeat(q[None], horizon, axis=0)
    t0 = time.perf_counter_ns()
    client.send_chunk(acts, client.server_now_ns() + 20_000_000, 10_000_000, "joint_pos")
    return time.perf_counter_ns() - t0


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
        q = client.read_state().joint_pos_rad
        sample = P.encode("CHUNK", {"chunk_id": 1, "obs_seq": 0, "t0_ns": 1, "dt_ns": 1, "action_space": "joint_pos"},
                          {"actions": np.repeat(q[None], int(cfg.chunk_horizon), axis=0)}, seq=1, session="0" * 16)
        sample = [bytes(f) for f in sample]
        for _ in range(int(cfg.warmup)):
            floor.roundtrip(sample)
            _chunk_roundtrip(client, q, int(cfg.chunk_horizon))
        floor_ns, bridge_ns, hb_ns = [], [], []
        per_block = int(cfg.roundtrips) // int(cfg.blocks)
        for _ in range(int(cfg.blocks)):
            client.heartbeat()  # keep the watchdog fed while the floor is timed
            floor_ns += [floor.roundtrip(sample) for _ in range(per_block)]
            bridge_ns += [_chunk_roundtrip(client, q, int(cfg.chunk_horizon)) for _ in range(per_block)]
            for _ in range(per_block // 4):
                t0 = time.perf_counter_ns()
                client.heartbeat()
                hb_ns.append(time.perf_counter_ns() - t0)
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
           f"{kind}_hb_rtt_p50_us": _percentiles_us(hb_ns)["p50"], f"{kind}_rtt_over_floor_p50": br["p50"] / fl["p50"]}
    return res, status


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
            print(f"[bench bridge] {kind}: rtt p50 {res[f'{kind}_rtt_p50_us']:.0f} us (floor "
                  f"{res[f'{kind}_floor_p50_us']:.0f} us), servo p99 err {status['period_err_p99_us']:.0f} us",
                  flush=True)
    first = servo[cfg.transports[0]]
    results.update(servo_rate_hz=float(cfg.servo_rate_hz), servo_ticks=int(first["ticks"]),
                   servo_period_err_p50_us=float(first["period_err_p50_us"]),
                   servo_period_err_p99_us=float(first["period_err_p99_us"]))
    write_json(Path(cfg.out) / "bench_bridge.json", results)
    print(bench_line(results))
    return results
