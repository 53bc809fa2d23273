"""The broker: copies every batch from ``listento`` to each queue in ``fanout``, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import Config, ProgramConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core.lifecycle import Flags
from pipeline.core.queue import Consumer, Delivery, Outcome
from pipeline.core.worker import Handler, run_consumer
from pipeline.registry import Component


@dataclass(frozen=True)
class BrokerOptions:
    listento: str = option(dt.name, "queue the batches come from")
    fanout: tuple[str, ...] = option(dt.name_list, "queues every batch is copied to")


def run(cfg: Config, program: ProgramConfig[BrokerOptions], flags: Flags) -> int:
    opts: BrokerOptions = program.options

    def make_handler(consumer: Consumer, _flags: Flags) -> Handler:
        def handle(delivery: Delivery) -> Outcome:
            bad = {raw for raw, _ in delivery.bad}  # dead-lettered by the run loop, not copied
            good = [raw for raw in delivery.raws if raw not in bad]
            pushes = [(queue, raw) for raw in good for queue in opts.fanout]
            return Outcome(pushes=pushes, count=delivery.count,
                           out=delivery.count * len(opts.fanout))

        return handle

    return run_consumer(cfg, program, opts.listento, make_handler, flags)


COMPONENT = Component(
    "broker", "copies every batch to each queue of fanout, in one transaction", BrokerOptions, run,
    reads=("listento",), writes=("fanout",), original_command="broker.py")
