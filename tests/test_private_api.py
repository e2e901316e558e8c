"""The private Ray Tune and Optuna attributes `nas/search` relies on are still there.

`nas/search/searcher.py` subclasses Ray's `OptunaSearch` and reaches into it (and into Optuna's
study and trial objects) where no public API exists. pyproject pins both libraries below the next
major version; this test fails loudly, naming the attribute, if a minor release removes one.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _define(trial: optuna.Trial) -> None:
    trial.suggest_int("x", 0, 3)


@pytest.fixture
def searcher() -> OptunaSearch:
    storage = optuna.storages.InMemoryStorage()
    return OptunaSearch(space=_define, metric=["a", "b"], mode=["max", "min"], storage=storage, study_name="s")


# attribute of OptunaSearch -> the type the searcher expects there (what it does with it)
SEARCHER_ATTRIBUTES = {
    "_ot_study": optuna.Study,  # the live study: ask/tell, user attrs, storage
    "_ot_trials": dict,  # Tune trial id -> Optuna trial, filled by our suggest()
    "_completed_trials": set,  # Tune trial ids already told (guards double tells)
    "_metric": (str, list),  # overwritten: Tune checks reported results against it
    "_mode": (str, list),
}


@pytest.mark.parametrize("name", sorted(SEARCHER_ATTRIBUTES))
def test_optuna_search_private_attribute(searcher, name):
    assert hasattr(searcher, name), f"ray.tune.search.optuna.OptunaSearch no longer has '{name}' (nas/search/searcher.py uses it)"
    value = getattr(searcher, name)
    assert isinstance(value, SEARCHER_ATTRIBUTES[name]), (
        f"OptunaSearch.{name} is now {type(value).__name__}, nas/search/searcher.py expects {SEARCHER_ATTRIBUTES[name]}"
    )


def test_optuna_study_storage_and_trial_id():
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert hasattr(study, "_storage"), "optuna.Study no longer has '_storage' (nas/search uses it)"
    trial = study.ask()
    assert hasattr(trial, "_trial_id"), "optuna.Trial no longer has '_trial_id' (nas/search uses it)"
    storage = study._storage
    # what mark_interrupted() and the guarded tell do with them
    storage.set_trial_user_attr(trial._trial_id, "status", "failed")
    assert storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    frozen = storage.get_trial(trial._trial_id)
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["status"] == "failed"
    assert hasattr(frozen, "_trial_id"), "optuna.trial.FrozenTrial no longer has '_trial_id' (nas/search uses it)"


def test_pinned_majors_are_the_tested_ones():
    """pyproject's upper bounds name the majors this suite ran on; a newer major must fail here."""
    from importlib import metadata

    ray_major = int(metadata.version("ray").split(".")[0])
    optuna_major = int(metadata.version("optuna").split(".")[0])
    assert ray_major == 2, f"ray {metadata.version('ray')}: the searcher was written against ray 2.x"
    assert optuna_major == 5, f"optuna {metadata.version('optuna')}: the searcher was written against optuna 5.x"


def test_rdb_heartbeat_api(tmp_path):
    """`results.storage` reads which RUNNING trials have a lapsed heartbeat through
    RDBStorage._get_stale_trial_ids (no public API tells it without failing the trials) and renews
    heartbeats with RDBStorage.record_heartbeat."""
    import time
    import warnings

    from optuna.storages import RDBStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed", category=UserWarning)
    storage = RDBStorage(f"sqlite:///{tmp_path}/hb.db", heartbeat_interval=1, grace_period=1)
    assert storage.get_heartbeat_interval() == 1
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    assert hasattr(storage, "_get_stale_trial_ids"), "RDBStorage no longer has '_get_stale_trial_ids' (results/storage.py uses it)"
    assert storage._get_stale_trial_ids(study._study_id) == []  # no heartbeat yet: never stale
    storage.record_heartbeat(trial._trial_id)
    assert storage._get_stale_trial_ids(study._study_id) == []
    time.sleep(2.2)
    assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]
    assert study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING  # telling is left to us


def test_ray_reads_the_cluster_flag_that_keeps_a_local_search_on_loopback():
    """`nas/search/ray_local.py` turns ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` off around
    ``ray.init`` so that the node IP stays 127.0.0.1 (every listener follows it), and checks the
    node IP with ``ray.util.get_node_ip_address`` afterwards."""
    import inspect

    import ray.util
    from ray._private import ray_constants, services

    assert isinstance(getattr(ray_constants, "ENABLE_RAY_CLUSTER", None), bool), (
        "ray._private.ray_constants.ENABLE_RAY_CLUSTER is gone (nas/search/ray_local.py relies on it)"
    )
    source = inspect.getsource(services.get_node_ip_address)  # what resolve_ip_for_localhost asks
    assert "ENABLE_RAY_CLUSTER" in source, "ray._private.services.get_node_ip_address no longer reads ENABLE_RAY_CLUSTER"
    assert callable(ray.util.get_node_ip_address)


def test_optuna_journal_lock_base_class():
    """`results/storage.py` gives JournalFileBackend an in-process lock (no symbolic link for a
    SIGKILL to leave in the run directory) built on Optuna's lock base class."""
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal._file import BaseJournalFileLock

    assert {"acquire", "release"} <= set(dir(BaseJournalFileLock))
    import inspect

    assert "lock_obj" in inspect.signature(JournalFileBackend).parameters
