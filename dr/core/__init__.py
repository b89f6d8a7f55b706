"""Pure cores: no I/O, no clock (it is an argument), nothing from ``dr.adapters`` or ``dr.commands``."""
