# A service cgw routes: Nomad registers it in Consul with a urlprefix- tag and a version tag
# (for canary weights and rollouts: cgw rollout start web --canary v2 --stable v1).
job "web" {
  datacenters = ["dc1"]

  group "web" {
    count = 2

    network {
      port "http" {}
    }

    task "web" {
      driver = "docker"

      config {
        image = "web:v1"
        ports = ["http"]
      }

      service {
        name     = "web"
        port     = "http"
        provider = "consul"
        tags     = ["urlprefix-/web", "v1"]
        check {
          type     = "http"
          path     = "/health"
          interval = "5s"
          timeout  = "2s"
        }
      }
    }
  }
}
