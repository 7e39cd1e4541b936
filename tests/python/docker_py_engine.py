"""docker-py against a moat engine: create, start, wait, logs, remove.

Run by tests/docker_py.rs with MOAT_ENGINE_SOCKET set.
"""

import os
import sys

import docker


def main() -> int:
    client = docker.DockerClient(base_url="unix://" + os.environ["MOAT_ENGINE_SOCKET"])
    assert client.ping()
    container = client.containers.create(
        "busybox:test", ["sh", "-c", "echo from-docker-py; echo to-stderr >&2; exit 4"]
    )
    container.start()
    result = container.wait(timeout=60)
    assert result["StatusCode"] == 4, result
    logs = container.logs(stdout=True, stderr=True).decode()
    assert "from-docker-py" in logs and "to-stderr" in logs, logs
    container.reload()
    assert container.status == "exited", container.status
    container.remove()
    assert all(c.id != container.id for c in client.containers.list(all=True))
    # The high-level run() streams output the way the CLI does.
    out = client.containers.run("busybox:test", ["echo", "run-ok"], remove=True)
    assert out == b"run-ok\n", out
    print("docker-py: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
