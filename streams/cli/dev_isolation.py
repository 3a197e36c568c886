"""`recstream dev` on an existing cluster: under a topic prefix of its own, its topics deleted at the end."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets

from streams.core.settings import Settings


def isolated(settings: Settings) -> Settings:
    """`settings` under a topic prefix of their own (the user's prefix + ``dev-<random>.``): on an
    existing cluster the demo once joined the deployment's consumer group, overwrote its catalog
    records and sent demo events for its users (a newcomer's check)."""
    return dataclasses.replace(settings, topic_prefix=f"{settings.topic_prefix}dev-{secrets.token_hex(4)}.")


async def drop_topics(settings: Settings) -> None:
    """Delete the topics under the demo's own prefix (best effort: printed, never raised)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs(), request_timeout_ms=15000)
    try:
        await asyncio.wait_for(admin.start(), 20)
        names = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if names:
            await admin.delete_topics(names)
        print(f"[dev] deleted its {len(names)} topics ({settings.topic_prefix}*)")
    except Exception as exc:  # noqa: BLE001 - the demo is over either way; say what is left
        print(f"[dev] could not delete its topics {settings.topic_prefix}* ({type(exc).__name__}: {exc})")
    finally:
        await admin.close()
