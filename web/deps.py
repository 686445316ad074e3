"""Dependencies that hand routes what the process holds, as `Annotated` aliases."""

from typing import Annotated

from fastapi import Depends, Request

from jobpulse.settings import Settings
from jobpulse.store import JobStore
from web.hub import Hub
from web.queue import JobQueue
from web.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_settings(request: Request) -> Settings:
    return get_services(request).settings


def get_store(request: Request) -> JobStore:
    return get_services(request).store


def get_queue(request: Request) -> JobQueue:
    return get_services(request).queue


def get_hub(request: Request) -> Hub:
    return get_services(request).hub


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
HubDep = Annotated[Hub, Depends(get_hub)]
