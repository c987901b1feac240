"""Webhooks: a client's optional webhook hears when its signing requests complete, are declined or
expire, signed with the Standard Webhooks scheme and retried with back-off (docs/signing.md).

``WebhookRegistry`` keeps each client's URL and secret; ``WebhookOutbox`` is the durable outbox
the signing flow writes to; ``Dispatcher`` (``idp webhooks run``) posts what is due.
"""

from idp.webhooks.delivery import HttpSender, Message, SendResult, payload, sign
from idp.webhooks.dispatcher import RETRY_DELAYS, Dispatcher, Tally
from idp.webhooks.outbox import Claimed, RequestEnded, WebhookOutbox
from idp.webhooks.records import ClientWebhook, DeliveryStatus, WebhookDelivery, WebhookEvent
from idp.webhooks.registry import InvalidWebhookUrl, WebhookRegistry, check_webhook_url, new_secret

__all__ = [
    "RETRY_DELAYS",
    "Claimed",
    "ClientWebhook",
    "DeliveryStatus",
    "Dispatcher",
    "HttpSender",
    "InvalidWebhookUrl",
    "Message",
    "RequestEnded",
    "SendResult",
    "Tally",
    "WebhookDelivery",
    "WebhookEvent",
    "WebhookOutbox",
    "WebhookRegistry",
    "check_webhook_url",
    "new_secret",
    "payload",
    "sign",
]
