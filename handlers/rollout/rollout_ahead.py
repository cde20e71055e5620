"""The next new container, created ahead: while one new instance comes up, compose already
creates (`--no-start`) the container of the next start step, so that step only starts it.

    ahead = Ahead(driver); ahead.create(ref)   # in a thread
    ahead.ids(ref)      -> [ID] once compose is done (for the planner to ignore, and to start)
    ahead.forget()      the caller took it
    ahead.drop()        remove it (rollback, pause, error, end)
"""
import threading

from ..core.errors import MedicError


class Ahead:
    def __init__(self, driver):
        self.d, self.box = driver, None

    def create(self, ref):
        box = {"ref": ref, "ids": [], "thread": None}

        def run():
            try:
                box["ids"] = self.d.create(ref)
            except MedicError:
                pass  # the next start creates its own
        box["thread"] = threading.Thread(target=run, daemon=True)
        self.box = box
        box["thread"].start()

    def ids(self, ref):
        """IDs created ahead for `ref` (waits for the compose run); one for another image is dropped."""
        box = self.box
        if box is None:
            return []
        box["thread"].join()
        if box["ref"] != ref:
            self.drop()
            return []
        return list(box["ids"])

    def forget(self):
        self.box = None

    def drop(self):
        box, self.box = self.box, None
        if box is not None:
            box["thread"].join()
            for cid in box["ids"]:
                self.remove(cid)

    def remove(self, cid):
        try:
            self.d.remove(cid)
        except MedicError:
            pass
