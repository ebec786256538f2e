"""Incident paging: Alertmanager alerts in, escalation until someone answers.

``intake`` reads Alertmanager's webhook body (pure), ``incidents`` decides what an event
does to an incident (pure), ``escalation`` runs the decisions against storage, the
gateway and the chat, ``alertmanager`` creates silences. Nothing here imports Telegram.
"""
