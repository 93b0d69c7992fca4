"""armflow.control: the ZeroMQ controller bridge (numpy, pyzmq, msgpack; never torch).

Robot side: ``BridgeServer`` (I/O process: ROUTER + PUB, handshake, lease) with the servo loop in its
own process (scheduler -> safety layer -> driver, watchdog). Policy side: ``BridgeClient``, the same
``Driver`` interface as a local arm plus ``send_chunk``. See ``/work/shared/design/bridge.md``.
"""
from armflow.control.protocol import PROTOCOL_VERSION, Message, ProtocolError, decode, encode
from armflow.control.clock import ClockSync
from armflow.control.limits import LimitsError, SafetyLimits, load_limits
from armflow.control.safety import SafetyLayer, SafetyViolation
from armflow.control.scheduler import ChunkScheduler
from armflow.control.watchdog import STATES, Watchdog
from armflow.control.security import CurveConfig, SecurityError, generate_keys
from armflow.control.server import BridgeServer, ServerConfig, ServerError
from armflow.control.launch import ServerProcess, serve_until_signal
from armflow.control.client import BridgeClient, BridgeError
from armflow.control.chaos import ChaosConfig, ChaosProxy
from armflow.control.fake_arm import FakeArm
from armflow.control.sim_limits import SafetyLimitedEnv

__all__ = [
    "PROTOCOL_VERSION", "Message", "ProtocolError", "decode", "encode", "ClockSync", "LimitsError", "SafetyLimits",
    "load_limits", "SafetyLayer", "SafetyViolation", "ChunkScheduler", "STATES", "Watchdog", "CurveConfig",
    "SecurityError", "generate_keys", "BridgeServer", "ServerConfig", "ServerError", "ServerProcess",
    "serve_until_signal", "BridgeClient", "BridgeError", "ChaosConfig", "ChaosProxy", "FakeArm",
    "SafetyLimitedEnv",
]
