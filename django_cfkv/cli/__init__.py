"""The parts of ``manage.py cfkv`` that shape text: its options (:mod:`.parser`) and its output (:mod:`.render`).

Neither reads settings nor reaches a store: the command (``django_cfkv.management.commands.cfkv``) runs
each subcommand and hands its report to a renderer.
"""
