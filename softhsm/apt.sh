# Sourced by the install scripts: install_missing PKG... installs Debian packages (as root, or with sudo).
install_missing() {
  (($#)) || return 0
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  echo "installing: $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
