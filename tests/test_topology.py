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
        assert table.changelog_topic.get_topic_name() == changelog(settings.app_id, name)


def test_the_worker_and_the_rebuild_read_the_same_inputs_with_the_same_kinds():
    worker_inputs = {t.get_topic_name() for t in topics.input_topics}
    assert worker_inputs == set(input_topics(settings)) == {settings.topic(n) for n in INPUT_KINDS}
    assert topics.TYPED_BY_NAME == {name: kind for name, kind in input_topics(settings).items() if kind is not None}
