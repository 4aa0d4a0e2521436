/// DockerEngine: a Docker Engine API client over the unix socket.
