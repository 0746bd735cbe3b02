"""DeviceService over gRPC: transport only (see `broker.grpc.codec.devices`)."""

from __future__ import annotations

from typing import Any

from broker.devices.directory import DeviceDirectory
from broker.grpc.codec.devices import device_to_proto
from broker.grpc.interceptor import CALLER
from qtestbed.v1 import devices_pb2, devices_pb2_grpc


class DeviceServicer(devices_pb2_grpc.DeviceServiceServicer):
    def __init__(self, directory: DeviceDirectory) -> None:
        self._directory = directory

    async def ListDevices(self, request: devices_pb2.ListDevicesRequest, context: Any) -> Any:
        views = await self._directory.list(CALLER.get())
        return devices_pb2.ListDevicesResponse(devices=[device_to_proto(v) for v in views])

    async def GetDevice(self, request: devices_pb2.GetDeviceRequest, context: Any) -> Any:
        return device_to_proto(await self._directory.get(CALLER.get(), request.device_id))
