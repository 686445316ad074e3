"""Dependencies that hand routes what the process holds, as `Annotated` aliases.

They are coroutines although they never wait: FastAPI calls a plain `def` dependency in a worker thread,
a thread hop per dependency per request, which cost more than all the rest of opening a stream.
"""

from typing import Annotated

from fastapi import Depends, Request

from jobpulse.settings import Settings
from jobpulse.store import JobStore
from web.hub import Hub
from web.queue import JobQueue
from web.services import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_settings(request: Request) -> Settings:
    return services_of(request).settings


async def get_store(request: Request) -> JobStore:
    return services_of(request).store


async def get_queue(request: Request) -> JobQueue:
    return services_of(request).queue


async def get_hub(request: Request) -> Hub:
    return services_of(request).hub


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
HubDep = Annotated[Hub, Depends(get_hub)]
