# cgw as a Nomad system job: one gateway on every client node, in front of the services Nomad
# registers in Consul with urlprefix- tags (see web.nomad.hcl beside this file). Build the image from
# compose/Dockerfile first (`docker build -f compose/Dockerfile -t cgw:local .`; push it to your
# registry and name it here when the clients pull), and store the admin token in Nomad variables
# (nomad var put nomad/jobs/cgw admin_token=...).
job "cgw" {
  datacenters = ["dc1"]
  type        = "system"

  group "gateway" {
    network {
      port "http" { static = 8080 }
      port "admin" { static = 9901 }
    }

    task "cgw" {
      driver = "docker"

      config {
        image        = "cgw:local"
        network_mode = "host"
        ports        = ["http", "admin"]
        args = [
          "node", "dist/cli/main.js", "start",
          "--consul", "http://127.0.0.1:8500",
          "--listen", "0.0.0.0:8080",
          "--admin", "0.0.0.0:9901",
          "--admin-token-file", "${NOMAD_SECRETS_DIR}/admin-token",
          "--gateway-id", "${node.unique.name}",
          "--register-address", "${attr.unique.network.ip-address}",
        ]
      }

      template {
        destination = "${NOMAD_SECRETS_DIR}/admin-token"
        perms       = "400"
        data        = "{{ with nomadVar \"nomad/jobs/cgw\" }}{{ .admin_token }}{{ end }}"
      }

      # SIGTERM drains in-flight requests and deregisters the gateway from Consul.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      resources {
        cpu    = 1000
        memory = 256
      }

      service {
        name     = "cgw-edge"
        port     = "http"
        provider = "consul"
        check {
          type     = "http"
          port     = "admin"
          path     = "/-/readyz"
          interval = "5s"
          timeout  = "2s"
        }
      }
    }
  }
}
