"""Users sync, ClearVox reads of a delta round: only the users it touches, by id, Object-ID and email."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shared.clearvox import ClearVox, CvUser
from shared.errors import ClearVoxNotFound
from shared.sync.users.rules import GraphUser, Link, object_key, text_of
from shared.sync.users.source import parallel


class CvLookup:
    """Concurrent ClearVox reads for a delta round; gathers users found and linked ids found missing."""

    def __init__(self, cv: ClearVox, concurrency: int) -> None:
        self.cv = cv
        self.concurrency = concurrency
        self.found: dict[str, CvUser] = {}
        self.gone: set[str] = set()
        self.results: dict[tuple[str, str], list[CvUser]] = {}

    def _one(self, job: tuple[str, str]) -> list[CvUser]:
        kind, value = job
        if kind == "id":
            try:
                return [self.cv.get_user(value)]
            except ClearVoxNotFound:
                return []
        if kind == "ext":
            return list(self.cv.iter_users(external_application_id=value))
        return [u for u in self.cv.iter_users(email=value) if u.email.strip().casefold() == value]

    def run(self, jobs: Iterable[tuple[str, str]]) -> None:
        todo = sorted(set(jobs) - set(self.results))
        for job, users in zip(todo, parallel(self._one, todo, self.concurrency), strict=True):
            self.results[job] = users
            self.found.update((u.id, u) for u in users)

    def for_users(self, users: Mapping[str, GraphUser | None], links: Mapping[str, Link]) -> None:
        """What the plan needs to see for these users (None: removed in Entra).

        A user with a links row is read by its ClearVox id (one request); only
        when that ClearVox user is gone or carries another Object-ID, or the
        Entra email changed, do the look-ups by Object-ID and by email follow.
        A user still waiting for a link therefore costs one read per run; an
        Object-ID pasted into some other ClearVox user than the one with the
        same email is found by the next full round.
        """
        rows = {object_key(k): v for k, v in links.items()}

        def by_id_and_email(key: str, user: GraphUser | None) -> set[tuple[str, str]]:
            mail = text_of(user.get("mail")).casefold() if user is not None else ""
            return {("ext", key)} | ({("email", mail)} if mail else set())

        first: dict[str, tuple[str, str]] = {}
        jobs: set[tuple[str, str]] = set()
        for key, user in users.items():
            link = rows.get(key)
            if link is not None and link.cv_user_id:
                first[key] = ("id", link.cv_user_id)
                jobs.add(first[key])
            else:
                jobs |= by_id_and_email(key, user)
        self.run(jobs)
        second: set[tuple[str, str]] = set()
        for key, job in first.items():
            user = users[key]
            got = self.results[job]
            mail = text_of(user.get("mail")).casefold() if user is not None else ""
            if not got:
                self.gone.add(job[1])
                second |= by_id_and_email(key, user)
                continue
            ext = object_key(got[0].external_application_id or "")
            waiting = rows[key].status == "unlinked" and not ext and (not mail or mail == got[0].email.casefold())
            if ext != key and not waiting:  # the Object-ID moved (or was pasted elsewhere): find where
                second |= by_id_and_email(key, user)
            elif mail and mail != got[0].email.casefold():
                second.add(("email", mail))
        self.run(second)

