"""Architecture description, blocks, model builder, counting, zoo and search spaces."""

from .config import ArchConfig, HeadConfig, StageConfig, StemConfig
from .cost import Cost
from .counting import analytic_cost, analytic_report, traced_cost
from .errors import ConfigError, UserError
from .model import build_model, drop_path_schedule
from .space import RandomChooser, SearchSpace
from .zoo import load_zoo, resolve_config, zoo_names

__all__ = [
    "ArchConfig", "HeadConfig", "StageConfig", "StemConfig", "Cost", "analytic_cost", "analytic_report",
    "traced_cost", "ConfigError", "UserError", "build_model", "RandomChooser", "SearchSpace", "load_zoo",
    "resolve_config", "zoo_names", "drop_path_schedule",
]  # fmt: skip
