"""Which Airflow is running, decided once; the rest of the package asks here."""

from __future__ import annotations

from airflow import __version__ as AIRFLOW_VERSION
from packaging.version import Version

_base = Version(Version(AIRFLOW_VERSION).base_version)

AIRFLOW_V_3_0_PLUS = _base >= Version("3.0.0")
AIRFLOW_V_3_1_PLUS = _base >= Version("3.1.0")
AIRFLOW_V_3_2_PLUS = _base >= Version("3.2.0")
AIRFLOW_V_3_3_PLUS = _base >= Version("3.3.0")

if AIRFLOW_V_3_1_PLUS:
    from airflow.sdk import BaseHook
else:  # pragma: no cover - Airflow 2.x and 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk import BaseNotifier
else:  # pragma: no cover - Airflow 2.x
    from airflow.notifications.basenotifier import BaseNotifier  # type: ignore[no-redef]

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk.exceptions import TaskDeferred
else:  # pragma: no cover - Airflow 2.x
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

try:
    from airflow.sdk.exceptions import AirflowNotFoundException
except ImportError:  # pragma: no cover - Airflow 2.x
    from airflow.exceptions import AirflowNotFoundException  # type: ignore[no-redef]

# Operators, sensors and links: the Task SDK on 3.x, the core modules on 2.x.
if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk import BaseOperator, BaseOperatorLink, BaseSensorOperator
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from airflow.sdk.execution_time.xcom import XCom
else:  # pragma: no cover - Airflow 2.x
    from airflow.exceptions import AirflowException, AirflowFailException  # type: ignore[no-redef]
    from airflow.models.baseoperator import BaseOperator  # type: ignore[no-redef]
    from airflow.models.baseoperatorlink import BaseOperatorLink  # type: ignore[no-redef]
    from airflow.models.xcom import XCom  # type: ignore[no-redef]
    from airflow.sensors.base import BaseSensorOperator  # type: ignore[no-redef]

# Triggers live in core on every version; event triggers (asset watchers) exist from 3.0.
from airflow.triggers.base import BaseTrigger, TriggerEvent  # noqa: E402

if AIRFLOW_V_3_0_PLUS:
    from airflow.triggers.base import BaseEventTrigger
else:  # pragma: no cover - Airflow 2.x has no asset watchers
    BaseEventTrigger = BaseTrigger  # type: ignore[misc,assignment]

__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "BaseEventTrigger",
    "BaseHook",
    "BaseNotifier",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "BaseTrigger",
    "TaskDeferred",
    "TriggerEvent",
    "XCom",
]
