"""A TCP proxy on loopback that holds every chunk it carries for a fixed
delay before passing it on, in both directions and in order: a slow link
between two members, for kernels without `tc netem` (the failure harness's
`delay` fault works the same way, jepsen/src/nemesis/delay.rs). It runs on
an event loop in a thread of its own and counts what it carried. Listens on
127.0.0.1 only and connects only to the one loopback port it was given."""
import asyncio
import threading
import time


class DelayProxy:
    """127.0.0.1:listen_port -> 127.0.0.1:target_port, delay_ms each way."""

    def __init__(self, listen_port, target_port, delay_ms):
        self.listen_port, self.target_port = listen_port, target_port
        self.delay = delay_ms / 1000.0
        self.connections = 0
        self.chunks = 0
        self.bytes = 0
        self._loop = None
        self._server = None
        self._thread = None
        self._ready = threading.Event()
        self._error = None

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"delay proxy on port {self.listen_port} did not start")
        if self._error:
            raise RuntimeError(f"delay proxy on port {self.listen_port}: {self._error}")
        return self

    def stop(self):
        if self._loop and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self):
        self._loop = asyncio.new_event_loop()
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", self.listen_port, reuse_address=True))
        except OSError as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _accept(self, client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        self.connections += 1
        await asyncio.gather(self._pipe(client_reader, server_writer),
                             self._pipe(server_reader, client_writer), return_exceptions=True)

    async def _pipe(self, reader, writer):
        """Reads chunks as they come and writes each `delay` after it was read."""
        held = asyncio.Queue()

        async def release():
            while True:
                due, data = await held.get()
                if data is None:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        releaser = asyncio.ensure_future(release())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                self.chunks += 1
                self.bytes += len(data)
                held.put_nowait((time.monotonic() + self.delay, data))
            held.put_nowait((0, None))
            await releaser
        finally:
            releaser.cancel()
            writer.close()
