"""The live worker and the bulk rebuild name things from one definition (streams.core.topology):
faust's changelog topics for the worker's tables are the names the rebuild writes, and the
worker reads exactly the input topics the rebuild reads, with the same kinds."""

from streams.core.topology import GLOBAL_TABLES, INPUT_KINDS, USER_TABLES, changelog
from streams.rebuild.topics import input_topics
from streams.worker import tables, topics
from streams.worker.app import settings


def test_faust_names_every_rebuilt_tables_changelog_as_the_rebuild_does():
    for name in (*USER_TABLES, *GLOBAL_TABLES):
        table = getattr(tables, name)
        assert table.changelog_topic.get_topic_name() == changelog(settings.kafka_app_id, name)


def test_the_worker_and_the_rebuild_read_the_same_inputs_with_the_same_kinds():
    worker_inputs = {t.get_topic_name() for t in topics.input_topics}
    assert worker_inputs == set(input_topics(settings)) == {settings.topic(n) for n in INPUT_KINDS}
    assert topics.TYPED_BY_NAME == {name: kind for name, kind in input_topics(settings).items() if kind is not None}


def test_a_topic_prefix_names_the_changelogs_and_consumer_groups_too():
    """Fuzzing: two environments with their own RECSTREAM_TOPIC_PREFIX and the default app id shared
    faust's changelogs and consumer groups (only topics were prefixed): a worker of one restored and
    served the other's state, and an event sent to one reached the other's users. The worker's own
    names are read in a fresh process (faust's app is built from the environment at import)."""
    import json
    import os
    import subprocess
    import sys

    from streams.core.settings import Settings

    probe = ("import json; from streams.worker import tables, topics; from streams.worker.app import app; "
             "from streams.kafka.direct import direct_group; from streams.worker.app import settings; "
             "print(json.dumps({'group': app.conf.id, 'direct': direct_group(settings.kafka_app_id), "
             "'changelogs': [getattr(tables, n).changelog_topic.get_topic_name() for n in "
             f"{[*USER_TABLES, *GLOBAL_TABLES]!r}], 'keyed': topics.signals.get_topic_name()}}))")
    names = {}
    for prefix in ("envA.", "envB."):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                                env={**env, "RECSTREAM_TOPIC_PREFIX": prefix})
        assert result.returncode == 0, result.stderr[-2000:]
        names[prefix] = json.loads(result.stdout.strip().splitlines()[-1])
        assert names[prefix]["group"] == f"{prefix}recstream" and names[prefix]["direct"] == f"{prefix}recstream-direct"
        assert all(c.startswith(f"{prefix}recstream-") for c in names[prefix]["changelogs"]), names[prefix]
        assert names[prefix]["keyed"] == f"{prefix}recstream.signals.keyed"  # as before the fix
        # the bulk rebuild writes the worker's changelogs under the same names
        rebuild = Settings.from_env({"RECSTREAM_TOPIC_PREFIX": prefix})
        assert names[prefix]["changelogs"] == [changelog(rebuild.kafka_app_id, n) for n in (*USER_TABLES, *GLOBAL_TABLES)]
    a, b = names["envA."], names["envB."]
    assert not {a["group"], a["direct"], *a["changelogs"]} & {b["group"], b["direct"], *b["changelogs"]}
