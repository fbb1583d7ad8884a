"""The customer portal's activity: send a fresh portal link (``arflow.portal.fresh_links``)."""

from __future__ import annotations

from temporalio import activity

from arflow.config import Settings
from arflow.db import SessionFactory
from arflow.messages.channels import Channel
from arflow.portal import fresh_links


class PortalActivities:
    def __init__(self, sessions: SessionFactory, settings: Settings, channel: Channel) -> None:
        self.sessions = sessions
        self.settings = settings
        self.channel = channel

    @activity.defn(name="send_portal_link")
    def send_portal_link(self, request_id: int) -> str:
        with self.sessions() as session:
            return fresh_links.send(session, self.settings, self.channel, request_id)

    def all(self) -> list[object]:
        return [self.send_portal_link]
