"""Delivery: the only code that talks to the upstream PUSH_SMS endpoint."""

from gateway.delivery.worker import DeliveryWorker, UpstreamStatus

__all__ = ["DeliveryWorker", "UpstreamStatus"]
