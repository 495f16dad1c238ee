"""The learner: trains the model it is sent on its partition's scans."""

from __future__ import annotations

import os

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from brainage_app.task import AgeNet, load_partition, train
from fedsim.federation.recorder import partition_id_mod  # tags replies with the learner, for local models

app = ClientApp(mods=[partition_id_mod])


@app.train()
def learn(msg: Message, context: Context) -> Message:
    manifest = context.run_config.get("manifest") or os.environ["BRAINAGE_MANIFEST"]
    pid, partitions = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    scans, ages = load_partition(manifest, pid, partitions)
    model = AgeNet()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    loss = train(model, scans, ages, epochs=int(msg.content["config"]["epochs"]), lr=float(msg.content["config"]["lr"]))
    metrics = MetricRecord({"num-examples": len(ages), "train-loss": loss})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)
