"""The Topics page through AppTest: compute, the table, open a topic, the whole-topic actions
and their undo, the stale warning, and annotators reading without the actions."""
import pytest

from selfinstruct.model import ACCEPTED, REJECTED
from tests.conftest import app_pool, open_page
from tests.topic_pool import SIZES, build

pytest.importorskip("wordllama")


@pytest.fixture
def topics_app(app_env):
    from selfinstruct.store import Pool

    with Pool.open(app_env) as pool:
        families = build(pool)
    yield app_env, families


def _table(at):
    return next(d.value for d in at.dataframe if "acceptance" in d.value.columns)


def test_compute_open_a_topic_act_and_undo(topics_app):
    path, families = topics_app
    at = open_page("pages/topics.py")
    assert any("No topics yet" in i.value for i in at.info)
    at.button(key="topics_compute").click().run()
    assert not at.exception
    table = _table(at)
    assert sorted(table["size"], reverse=True) == sorted((a + b for a, b, _ in SIZES.values()), reverse=True)
    pool = app_pool(path)
    code_topic = pool.topics.topic_of_items(pool.topics.latest_set("wordllama-l2_supercat-256")["id"], "candidate",
                                            families["code"]["accepted"][:1])
    topic = next(iter(code_topic.values()))
    at.session_state["topics_table"] = {"selection": {"rows": [topic - 1], "columns": []}}
    at.run()
    assert not at.exception
    assert any(f"Topic {topic}:" in h.value for h in at.subheader)
    items = next(d.value for d in at.dataframe if "instruction" in d.value.columns and "state" in d.value.columns)
    n_seed, n_acc, n_rej = SIZES["code"]
    assert len(items) == n_seed + n_acc + n_rej

    at.button(key="topics_remove").click().run()
    assert not at.exception
    assert all(pool.audit.read_state("candidate", c)["status"] == REJECTED for c in families["code"]["accepted"])
    assert len(pool.seeds.seed_tasks()) == sum(s for s, _, _ in SIZES.values())      # seeds not ticked: kept
    assert any("Removed" in s.value for s in at.success)
    # The pool changed: the page says so and offers to refresh.
    assert any("changed since" in w.value for w in at.warning)
    undo = next(b for b in at.button if b.key and b.key.startswith("topics_undo_"))
    undo.click().run()
    assert not at.exception
    assert all(pool.audit.read_state("candidate", c)["status"] == ACCEPTED for c in families["code"]["accepted"])

    at.session_state["topics_table"] = {"selection": {"rows": [topic - 1], "columns": []}}
    at.run()
    at.button(key="topics_mark").click().run()
    assert not at.exception
    assert "avoid" in list(_table(at)["avoid"])


def test_search_reaches_every_item_and_the_map_colours(topics_app):
    path, families = topics_app
    at = open_page("pages/topics.py")
    at.button(key="topics_compute").click().run()
    at.text_input(key="topics_search").input("haiku").run()
    assert any("**0** item(s)" == m.value for m in at.markdown)
    at.text_input(key="topics_search").input("linked list").run()
    items = next(d.value for d in at.dataframe if "state" in d.value.columns and "instruction" in d.value.columns)
    assert len(items) >= 1 and all("linked list" in t for t in items["instruction"])
    for colour in ("state", "origin", "labeled_invalid", "judge_no", "topic"):
        at.segmented_control(key="topics_color").set_value(colour).run()
        assert not at.exception
