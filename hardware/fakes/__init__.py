"""Faithful fakes of the vendor SDKs' call surfaces and state machines (ur_rtde, franky, xarm-python-sdk).

Each ``make_sdk(robot=None)`` returns a namespace with the real SDK's class names bound to one fake
controller (``FakeURController``, ``FakeFrankaController``, ``FakeXArmController``), so the real
adapters in ``armflow.hardware.{ur,franka,xarm}`` run unchanged against them (``sdk="fake"``).
"""
