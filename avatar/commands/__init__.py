"""Subcommands of ``python -m avatar``. Each module defines ``register(subparsers)`` which adds a parser
whose ``func(args) -> int`` runs the command. Modules import heavy dependencies inside ``func``."""

COMMAND_MODULES = [
    "avatar.commands.render",
    "avatar.commands.say",
    "avatar.commands.detect",
    "avatar.commands.verify",
    "avatar.commands.prepare_data",
    "avatar.commands.prepare_motion",
    "avatar.commands.train",
    "avatar.commands.distill",
    "avatar.commands.train_motion",
    "avatar.commands.eval",
]
