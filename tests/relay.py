"""A TCP relay in front of a real server (tests only): the server's address that a test can kill.

    python tests/relay.py LISTEN_PORT TARGET_PORT

Every connection to 127.0.0.1:LISTEN_PORT is passed through, byte for byte, to 127.0.0.1:TARGET_PORT.
SIGKILL the relay and its clients see what a crashed server gives them: the connections in flight reset,
and every new one refused. The server behind it (the session's vLLM server) lives on for the other tests,
and no second server has to start (about 45 s on 2 cores) only to be killed.
"""

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(listen_port: int, target_port: int) -> None:
    async def relay(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    listener = await asyncio.start_server(relay, "127.0.0.1", listen_port)
    print("relaying", flush=True)
    async with listener:
        await listener.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
