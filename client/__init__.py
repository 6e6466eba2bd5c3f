"""A small asyncio NATS Streaming (STAN) client on nats-py.

The official Python client does not run on Python >= 3.10; this one speaks
the same protocol (protocol level 1: connID and client PINGs) and is what the
project's tests and benchmarks use. All encoding and texts come from
``protocol/``.

Usage::

    import asyncio
    from client import StanError, connect

    async def main() -> None:
        sc = await connect("test-cluster", "me", nats_url="nats://127.0.0.1:4222")
        try:
            guid = await sc.publish("orders", b"hello")  # waits for the PubAck

            # Fire many, collect the acks later (blocks only at max_pub_acks_inflight).
            futures = [await sc.publish_async("orders", b"x") for _ in range(100)]
            await asyncio.gather(*futures)

            received: asyncio.Queue[bytes] = asyncio.Queue()

            async def on_msg(msg) -> None:  # msg: client.Msg
                await received.put(msg.data)  # auto-acked after the callback returns

            sub = await sc.subscribe("orders", on_msg, start_at="first",
                                     durable_name="audit", max_inflight=64, ack_wait=30)
            print(await received.get())
            await sub.close()        # durable kept offline; sub.unsubscribe() deletes it
        except StanError as err:     # str(err) is the exact server or client text
            print("failed:", err)
        finally:
            await sc.close()

    asyncio.run(main())

``await sc.publish_async(channel, data, ack_handler)`` returns the GUID instead
and later calls ``ack_handler(guid, error)`` (``error`` is "" on success).
Other start positions: ``start_at="last_received"``, ``start_sequence=42``,
``start_time_delta=60.0`` (seconds back), ``start_time=datetime(...)``.
Queue groups: ``queue="workers"``. Manual acks: ``manual_acks=True`` and
``await msg.ack()``. ``conn_lost_cb(sc, err)`` is called when the server stops
answering PINGs or reports the client as replaced.

Escape hatches for tests: ``sc.nc`` (the NATS connection), ``sc.client_id``,
``sc.conn_id``, ``sc.pub_prefix``, ``sc.sub_requests``, ``sc.unsub_requests``,
``sc.close_requests``, ``sc.sub_close_requests``, ``sc.ping_requests``,
``sc.heartbeat_inbox``, ``sc.ack_subject``; ``sub.inbox`` and ``sub.ack_inbox``.
``connect(..., ping_interval_ms=50)`` speeds up pings, ``protocol=0`` acts as
a legacy client.
"""

from client.client import ConnLostHandler, StanConnection, connect
from client.errors import StanError
from client.pending import AckHandler
from client.subscription import Msg, MsgHandler, StartAt, Subscription

__all__ = [
    "AckHandler",
    "ConnLostHandler",
    "Msg",
    "MsgHandler",
    "StanConnection",
    "StanError",
    "StartAt",
    "Subscription",
    "connect",
]
