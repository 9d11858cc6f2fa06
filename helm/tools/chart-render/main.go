// chart-render: a stand-in for `helm template` and `helm lint` for machines that cannot get the helm
// binary (Debian does not package it and only the Debian and npm registries are reachable here).
//
// It reproduces Helm 3's template engine (helm.sh/helm/v3/pkg/engine) with the same building blocks:
// Go text/template, Masterminds/sprig v3 (minus env/expandenv, as Helm does), sigs.k8s.io/yaml for
// toYaml/fromYaml and for reading values (so numbers are float64, as in Helm), Helm's include, tpl,
// required, fail and lookup (always empty), missingkey=zero and the "<no value>" clean-up. Values are
// coalesced like Helm's (user maps merge into defaults, null deletes a default). Not supported:
// subcharts, values.schema.json, hooks ordering; of .Files only Get. A real `helm` on PATH is always preferred
// (see test/helm-chart.test.ts); this exists so CI can render the chart with Debian packages only.
//
// Build (GOPATH mode against Debian's packaged sources, no network):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o chart-render ./main.go
//
// Usage:
//
//	chart-render template RELEASE CHART_DIR [-n NS] [-f values.yaml]... [--set a.b=c]...
//	chart-render lint CHART_DIR [--strict] [-f values.yaml]... [--set a.b=c]...
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/semver"
	"github.com/Masterminds/sprig"
	"sigs.k8s.io/yaml"
)

type values = map[string]interface{}

// versionSet mirrors chartutil.VersionSet so templates may call .Capabilities.APIVersions.Has.
type versionSet []string

func (v versionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

type options struct {
	release, namespace, chartDir string
	valueFiles, sets             []string
}

func main() {
	if len(os.Args) < 2 {
		die(errors.New("usage: chart-render template RELEASE CHART | lint CHART [-n NS] [-f FILE] [--set K=V]"))
	}
	cmd := os.Args[1]
	opts, err := parseArgs(cmd, os.Args[2:])
	if err != nil {
		die(err)
	}
	switch cmd {
	case "template":
		out, err := renderChart(opts, false)
		if err != nil {
			die(err)
		}
		fmt.Print(out)
	case "lint":
		if err := lint(opts); err != nil {
			fmt.Printf("==> Linting %s\n[ERROR] %v\n\nError: 1 chart(s) linted, 1 chart(s) failed\n", opts.chartDir, err)
			os.Exit(1)
		}
		fmt.Printf("==> Linting %s\n\n1 chart(s) linted, 0 chart(s) failed\n", opts.chartDir)
	default:
		die(fmt.Errorf("unknown command %q", cmd))
	}
}

func die(err error) {
	fmt.Fprintf(os.Stderr, "Error: %v\n", err)
	os.Exit(1)
}

func parseArgs(cmd string, args []string) (options, error) {
	o := options{release: "release-name", namespace: "default"}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("flag %s needs a value", a)
			}
			i++
			return args[i], nil
		}
		var err error
		var v string
		switch a {
		case "-n", "--namespace":
			o.namespace, err = next()
		case "-f", "--values":
			v, err = next()
			o.valueFiles = append(o.valueFiles, v)
		case "--set":
			v, err = next()
			o.sets = append(o.sets, v)
		case "--strict":
			// lint is always strict (missingkey=error); accepted for helm compatibility.
		default:
			if strings.HasPrefix(a, "-") {
				return o, fmt.Errorf("unsupported flag %s", a)
			}
			pos = append(pos, a)
		}
		if err != nil {
			return o, err
		}
	}
	switch {
	case cmd == "template" && len(pos) == 2:
		o.release, o.chartDir = pos[0], pos[1]
	case cmd == "lint" && len(pos) == 1:
		o.chartDir = pos[0]
	default:
		return o, fmt.Errorf("%s: wrong number of arguments %v", cmd, pos)
	}
	return o, nil
}

func readYAMLFile(file string) (values, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	v := values{}
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	return v, nil
}

// coalesce merges src (higher priority) over dst like Helm's chartutil.CoalesceValues: nested maps
// merge, null in src removes the key, anything else in src replaces.
func coalesce(dst, src values) values {
	for k, sv := range src {
		if sv == nil {
			delete(dst, k)
			continue
		}
		sm, sIsMap := sv.(values)
		dm, dIsMap := dst[k].(values)
		if sIsMap && dIsMap {
			dst[k] = coalesce(dm, sm)
		} else {
			dst[k] = sv
		}
	}
	return dst
}

// setValue applies one simple --set a.b.c=v (no list indexes), typed like Helm's strvals.
func setValue(v values, expr string) error {
	eq := strings.IndexByte(expr, '=')
	if eq <= 0 {
		return fmt.Errorf("--set %q: want key=value", expr)
	}
	keys, raw := strings.Split(expr[:eq], "."), expr[eq+1:]
	var typed interface{} = raw
	if n, err := strconv.ParseInt(raw, 10, 64); err == nil {
		typed = n
	} else if raw == "true" || raw == "false" {
		typed = raw == "true"
	} else if raw == "null" {
		typed = nil
	}
	m := v
	for _, k := range keys[:len(keys)-1] {
		child, ok := m[k].(values)
		if !ok {
			child = values{}
			m[k] = child
		}
		m = child
	}
	m[keys[len(keys)-1]] = typed
	return nil
}

func loadValues(o options) (values, values, error) {
	chartMeta, err := readYAMLFile(filepath.Join(o.chartDir, "Chart.yaml"))
	if err != nil {
		return nil, nil, err
	}
	defaults := values{}
	if _, err := os.Stat(filepath.Join(o.chartDir, "values.yaml")); err == nil {
		if defaults, err = readYAMLFile(filepath.Join(o.chartDir, "values.yaml")); err != nil {
			return nil, nil, err
		}
	}
	user := values{}
	for _, f := range o.valueFiles {
		fv, err := readYAMLFile(f)
		if err != nil {
			return nil, nil, err
		}
		user = coalesce(user, fv)
	}
	for _, s := range o.sets {
		if err := setValue(user, s); err != nil {
			return nil, nil, err
		}
	}
	return chartMeta, coalesce(defaults, user), nil
}

// chartObject exposes Chart.yaml as .Chart with Helm's field names (Name, Version, AppVersion, ...).
func chartObject(meta values) values {
	out := values{}
	for k, v := range meta {
		switch k {
		case "apiVersion":
			out["APIVersion"] = v
		default:
			out[strings.ToUpper(k[:1])+k[1:]] = v
		}
	}
	return out
}

// chartFiles is .Files: the chart's files outside templates/, by path relative to the chart.
type chartFiles map[string][]byte

// Get returns a file's content, or "" when there is no such file (as Helm does).
func (f chartFiles) Get(name string) string { return string(f[name]) }

func loadFiles(chartDir string) (chartFiles, error) {
	files := chartFiles{}
	err := filepath.WalkDir(chartDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		if d.IsDir() {
			if rel == "templates" {
				return filepath.SkipDir
			}
			return nil
		}
		data, err := os.ReadFile(p)
		files[filepath.ToSlash(rel)] = data
		return err
	})
	return files, err
}

func funcMap(t *template.Template, strict, lintMode bool) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	f["toYaml"] = func(v interface{}) string {
		data, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(data), "\n")
	}
	f["fromYaml"] = func(s string) values {
		m := values{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["toJson"] = func(v interface{}) string {
		data, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(data)
	}
	f["fromJson"] = func(s string) values {
		m := values{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	depth := map[string]int{}
	f["include"] = func(name string, data interface{}) (string, error) {
		if depth[name] > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		depth[name]++
		defer func() { depth[name]-- }()
		var buf strings.Builder
		err := t.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		c, err := t.Clone()
		if err != nil {
			return "", err
		}
		if _, err := c.New("tpl").Parse(text); err != nil {
			return "", err
		}
		var buf strings.Builder
		if err := c.ExecuteTemplate(&buf, "tpl", data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["required"] = func(warn string, val interface{}) (interface{}, error) {
		if val == nil || val == "" {
			if lintMode {
				return "", nil
			}
			return val, errors.New(warn)
		}
		return val, nil
	}
	f["fail"] = func(msg string) (string, error) {
		if lintMode {
			return "", nil
		}
		return "", errors.New(msg)
	}
	f["lookup"] = func(string, string, string, string) (values, error) { return values{}, nil }
	return f
}

// manifestSep is Helm's releaseutil separator.
var manifestSep = regexp.MustCompile(`(?:^|\s*\n)---\s*`)

// renderChart returns helm-template-like output: "---\n# Source: chart/templates/x.yaml\n..." per document.
func renderChart(o options, strict bool) (string, error) {
	meta, vals, err := loadValues(o)
	if err != nil {
		return "", err
	}
	chartName, _ := meta["name"].(string)
	tplDir := filepath.Join(o.chartDir, "templates")
	entries, err := os.ReadDir(tplDir)
	if err != nil {
		return "", err
	}
	t := template.New("gotpl")
	if strict {
		t.Option("missingkey=error")
	} else {
		t.Option("missingkey=zero")
	}
	t.Funcs(funcMap(t, strict, strict))
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		name := path.Join(chartName, "templates", e.Name())
		src, err := os.ReadFile(filepath.Join(tplDir, e.Name()))
		if err != nil {
			return "", err
		}
		if _, err := t.New(name).Parse(string(src)); err != nil {
			return "", fmt.Errorf("parse error in %s: %v", name, err)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	files, err := loadFiles(o.chartDir)
	if err != nil {
		return "", err
	}
	top := values{
		"Values": vals,
		"Files":  files,
		"Chart":  chartObject(meta),
		"Release": values{
			"Name": o.release, "Namespace": o.namespace, "IsInstall": true, "IsUpgrade": false,
			"Revision": 1, "Service": "Helm",
		},
		"Capabilities": values{
			"KubeVersion": values{"Version": "v1.29.0", "Major": "1", "Minor": "29", "GitVersion": "v1.29.0"},
			"APIVersions": versionSet{"v1", "apps/v1", "policy/v1", "autoscaling/v2", "monitoring.coreos.com/v1"},
			"HelmVersion": values{"Version": "v3-compatible (chart-render)"},
		},
	}
	var out strings.Builder
	for _, name := range names {
		base := path.Base(name)
		if strings.HasPrefix(base, "_") {
			continue // partials
		}
		top["Template"] = values{"Name": name, "BasePath": path.Join(chartName, "templates")}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, name, top); err != nil {
			return "", fmt.Errorf("execution error in %s: %v", name, err)
		}
		rendered := strings.ReplaceAll(buf.String(), "<no value>", "")
		if base == "NOTES.txt" {
			continue // helm template does not print NOTES; rendering it above still checks it executes
		}
		for _, doc := range manifestSep.Split(rendered, -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var head values
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return "", fmt.Errorf("YAML parse error on %s: %v", name, err)
			}
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", name, strings.TrimRight(doc, " \t\n"))
		}
	}
	return out.String(), nil
}

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// lint runs the checks of `helm lint` that matter here, plus a strict render (missingkey=error), so a
// template that reads a value missing from values.yaml fails.
func lint(o options) error {
	meta, err := readYAMLFile(filepath.Join(o.chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	if meta["apiVersion"] != "v2" {
		return errors.New("Chart.yaml: apiVersion must be v2")
	}
	name, _ := meta["name"].(string)
	if name == "" || name != filepath.Base(filepath.Clean(o.chartDir)) {
		return fmt.Errorf("Chart.yaml: name %q must match the directory name", name)
	}
	version, _ := meta["version"].(string)
	if _, err := semver.StrictNewVersion(version); err != nil {
		return fmt.Errorf("Chart.yaml: version %q is not strict SemVer 2", version)
	}
	if _, ok := meta["appVersion"].(string); !ok {
		return errors.New("Chart.yaml: appVersion should be a quoted string")
	}
	out, err := renderChart(o, true)
	if err != nil {
		return err
	}
	for _, doc := range manifestSep.Split(out, -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var m values
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			return err
		}
		md, _ := m["metadata"].(values)
		mname, _ := md["name"].(string)
		if m["apiVersion"] == nil || m["kind"] == nil || mname == "" {
			return fmt.Errorf("manifest without apiVersion, kind or metadata.name:\n%s", doc)
		}
		if len(mname) > 253 || !dns1123.MatchString(mname) {
			return fmt.Errorf("metadata.name %q is not a valid DNS-1123 name", mname)
		}
	}
	return nil
}
