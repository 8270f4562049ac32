//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kache-planner/kache-planner/internal/testenv"
)

// mc runs the MinIO client (github.com/minio/mc, built from the Go module
// proxy by e2e/tools.sh) with its own config directory and HOME, so that
// nothing of the machine's mc setup takes part.
type mc struct {
	bin, cfg, home string
}

// newMC finds mc. A missing mc fails the test, here and in CI: this client
// is the surface's proof of compatibility, never a silent skip.
func newMC(t testing.TB) *mc {
	t.Helper()
	bin, err := testenv.LookTool("mc")
	if err != nil {
		t.Fatalf("%v; the S3 surface's mc test never skips", err)
	}
	dir := t.TempDir()
	m := &mc{bin: bin, cfg: filepath.Join(dir, "config"), home: filepath.Join(dir, "home")}
	must(t, os.MkdirAll(m.home, 0o700))
	return m
}

// run runs mc with --config-dir, --quiet and --no-color before args and
// returns its exit code, stdout and stderr.
func (m *mc) run(t testing.TB, args ...string) (int, []byte, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.bin, append([]string{"--config-dir", m.cfg, "--quiet", "--no-color", "--disable-pager"}, args...)...)
	env := []string{"HOME=" + m.home}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MC_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("mc %s: did not finish in 2m", strings.Join(args, " "))
	}
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("mc %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	return code, stdout.Bytes(), stderr.Bytes()
}

// ok runs mc and fails the test unless it exits 0; it returns stdout.
func (m *mc) ok(t testing.TB, args ...string) []byte {
	t.Helper()
	code, out, errOut := m.run(t, args...)
	if code != 0 {
		t.Fatalf("mc %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// mcError is mc's --json error record.
type mcError struct {
	Status string `json:"status"`
	Error  struct {
		Message string `json:"message"`
		Cause   struct {
			Message string `json:"message"`
			Error   struct {
				Code string `json:"Code"`
			} `json:"error"`
		} `json:"cause"`
	} `json:"error"`
}

// fails runs mc with --json, wants exit code 1 and returns its error record
// (S3 code, or mc's own message when it names the error itself).
func (m *mc) fails(t testing.TB, args ...string) mcError {
	t.Helper()
	code, out, errOut := m.run(t, append([]string{"--json"}, args...)...)
	if code != 1 {
		t.Errorf("mc %s: exit %d, want 1\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	for _, line := range bytes.Split(append(out, errOut...), []byte("\n")) {
		var e mcError
		if json.Unmarshal(line, &e) == nil && e.Status == "error" {
			return e
		}
	}
	t.Errorf("mc %s: no JSON error record in\n%s%s", strings.Join(args, " "), out, errOut)
	return mcError{}
}

// TestS3SurfaceMC runs the mc binary against the sidecar in front of
// MinIO: cp up (a small file, and a 65 MiB one that mc sends as a
// multipart upload) lands in MinIO byte for byte; cat and cp down, cat
// --offset/--tail (ranges, from the bucket and from the store), head, stat,
// ls --recursive over more than a page of keys, rm; and mc's exit code 1 with
// S3's answer for wrong credentials, a missing key and a wrong bucket.
func TestS3SurfaceMC(t *testing.T) {
	m := newMC(t)
	o := startMinio(t)
	ctx := context.Background()
	must(t, o.client.MakeBucket(ctx, "other", minio.MakeBucketOptions{Region: testenv.MinioRegion}))
	sc := startS3Sidecar(t, o, "")
	ep := sc.endpoint
	m.ok(t, "alias", "set", "sidecar", ep, localAccessKey, localSecretKey, "--api", "S3v4", "--path", "on")
	m.ok(t, "alias", "set", "badsecret", ep, localAccessKey, "not-the-secret", "--api", "S3v4", "--path", "on")
	m.ok(t, "alias", "set", "badkey", ep, "not-the-key", localSecretKey, "--api", "S3v4", "--path", "on")

	dir := t.TempDir()
	small := randomBytes(10<<10+5, 11)
	smallPath := filepath.Join(dir, "small.bin")
	must(t, os.WriteFile(smallPath, small, 0o644))
	text := []byte("first line\nsecond line\nthird line\n")
	textPath := filepath.Join(dir, "lines.txt")
	must(t, os.WriteFile(textPath, text, 0o644))
	big := randomBytes(65<<20, 12)
	bigPath := filepath.Join(dir, "big.bin")
	must(t, os.WriteFile(bigPath, big, 0o644))
	pack := newKacheEntry(t, "tokio", 12, 200<<10)
	packPath := filepath.Join(dir, "pack.tar.zst")
	must(t, os.WriteFile(packPath, pack.pack, 0o644))

	t.Run("CpUp", func(t *testing.T) {
		for _, f := range []struct {
			path, key string
			body      []byte
		}{
			{smallPath, "mc/small.bin", small},
			{textPath, "mc/lines.txt", text},
			{packPath, pack.packKey(), pack.pack},
		} {
			m.ok(t, "cp", f.path, "sidecar/"+testBucket+"/"+f.key)
			if got, _ := minioBytes(t, o, testBucket, f.key); !bytes.Equal(got, f.body) {
				t.Fatalf("mc cp %s: MinIO holds %d bytes, want %d", f.key, len(got), len(f.body))
			}
		}
		if local, err := sc.stored("packs", pack.crate, pack.key, ".tar.zst"); err != nil || !bytes.Equal(local, pack.pack) {
			t.Fatalf("pack put with mc not kept in the store: %v", err)
		}
	})

	t.Run("CpUpMultipart", func(t *testing.T) {
		start := time.Now()
		m.ok(t, "cp", bigPath, "sidecar/"+testBucket+"/mc/big.bin")
		took := time.Since(start)
		_, info := minioStatHash(t, o, "mc/big.bin")
		if info.hash != sha256Hex(big) {
			t.Fatal("mc cp of 65 MiB: MinIO does not hold the file's bytes")
		}
		if !strings.Contains(info.etag, "-") {
			t.Fatalf("mc cp of 65 MiB was not a multipart upload (ETag %s)", info.etag)
		}
		start = time.Now()
		out := filepath.Join(dir, "big.out")
		m.ok(t, "cp", "sidecar/"+testBucket+"/mc/big.bin", out)
		got, err := os.ReadFile(out)
		must(t, err)
		if sha256Hex(got) != sha256Hex(big) {
			t.Fatalf("mc cp down of 65 MiB: %d bytes, not what was uploaded", len(got))
		}
		t.Logf("65 MiB with mc: up as a multipart upload (ETag %s) in %s, down in %s", info.etag, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	})

	t.Run("CatAndRanges", func(t *testing.T) {
		if got := m.ok(t, "cat", "sidecar/"+testBucket+"/mc/small.bin"); !bytes.Equal(got, small) {
			t.Fatalf("mc cat: %d bytes, want %d", len(got), len(small))
		}
		for _, obj := range []struct {
			key  string
			body []byte
		}{{"mc/small.bin", small}, {pack.packKey(), pack.pack}} {
			url := "sidecar/" + testBucket + "/" + obj.key
			if got := m.ok(t, "cat", "--offset", "1000", url); !bytes.Equal(got, obj.body[1000:]) {
				t.Errorf("mc cat --offset 1000 %s: %d bytes, want %d", obj.key, len(got), len(obj.body)-1000)
			}
			if got := m.ok(t, "cat", "--tail", "777", url); !bytes.Equal(got, obj.body[len(obj.body)-777:]) {
				t.Errorf("mc cat --tail 777 %s: %d bytes, want 777", obj.key, len(got))
			}
		}
		if got := m.ok(t, "head", "-n", "2", "sidecar/"+testBucket+"/mc/lines.txt"); string(got) != "first line\nsecond line\n" {
			t.Errorf("mc head -n 2: %q", got)
		}
	})

	t.Run("Stat", func(t *testing.T) {
		var st struct {
			Status string `json:"status"`
			Size   int64  `json:"size"`
			ETag   string `json:"etag"`
		}
		must(t, json.Unmarshal(m.ok(t, "--json", "stat", "sidecar/"+testBucket+"/mc/small.bin"), &st))
		_, info := minioBytes(t, o, testBucket, "mc/small.bin")
		if st.Status != "success" || st.Size != int64(len(small)) || st.ETag != info.ETag {
			t.Fatalf("mc stat: %+v; MinIO: size %d, ETag %s", st, len(small), info.ETag)
		}
	})

	t.Run("LsBuckets", func(t *testing.T) {
		var b struct{ Status, Key string }
		out := m.ok(t, "--json", "ls", "sidecar")
		if err := json.Unmarshal(bytes.TrimSpace(out), &b); err != nil || b.Status != "success" || b.Key != testBucket+"/" {
			t.Fatalf("mc ls sidecar: %s (%v), want only %s/", out, err, testBucket)
		}
	})

	t.Run("LsRecursivePagination", func(t *testing.T) {
		var want []string
		for i := range 1050 {
			want = append(want, fmt.Sprintf("mc/list/%02d/key-%04d", i%10, i))
		}
		seedKeys(t, o, want, []byte("x"))
		out := m.ok(t, "--json", "ls", "--recursive", "sidecar/"+testBucket+"/mc/list/")
		var got []string
		for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
			var e struct {
				Status, Key string
			}
			must(t, json.Unmarshal(line, &e))
			if e.Status != "success" {
				t.Fatalf("mc ls: %s", line)
			}
			got = append(got, "mc/list/"+e.Key)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("mc ls --recursive: %d keys, want the %d seeded", len(got), len(want))
		}
	})

	t.Run("Rm", func(t *testing.T) {
		m.ok(t, "rm", "sidecar/"+testBucket+"/mc/lines.txt")
		if _, err := o.client.StatObject(ctx, testBucket, "mc/lines.txt", minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
			t.Fatalf("mc rm: still in MinIO (%v)", err)
		}
	})

	t.Run("WrongCredentials", func(t *testing.T) {
		for _, c := range []struct{ alias, code string }{{"badsecret", "SignatureDoesNotMatch"}, {"badkey", "InvalidAccessKeyId"}} {
			if e := m.fails(t, "cat", c.alias+"/"+testBucket+"/mc/small.bin"); e.Error.Cause.Error.Code != c.code {
				t.Errorf("mc cat as %s: %+v, want %s", c.alias, e, c.code)
			}
			if e := m.fails(t, "ls", c.alias+"/"+testBucket+"/mc/"); e.Error.Cause.Error.Code != c.code {
				t.Errorf("mc ls as %s: %+v, want %s", c.alias, e, c.code)
			}
			if e := m.fails(t, "cp", smallPath, c.alias+"/"+testBucket+"/mc/unauthorized.bin"); e.Error.Cause.Error.Code != c.code {
				t.Errorf("mc cp as %s: %+v, want %s", c.alias, e, c.code)
			}
			if e := m.fails(t, "rm", c.alias+"/"+testBucket+"/mc/small.bin"); e.Status != "error" {
				t.Errorf("mc rm as %s: %+v, want an error", c.alias, e)
			}
		}
		if keys := minioKeys(t, o, testBucket, "mc/unauthorized"); len(keys) != 0 {
			t.Errorf("unauthorized mc cp reached MinIO: %v", keys)
		}
		if got, _ := minioBytes(t, o, testBucket, "mc/small.bin"); !bytes.Equal(got, small) {
			t.Error("unauthorized mc rm reached MinIO")
		}
	})

	t.Run("MissingKey", func(t *testing.T) {
		missing := newKacheEntry(t, "tokio", 13, 1024)
		for _, key := range []string{"mc/no/such/key", missing.packKey()} {
			for _, cmd := range []string{"cat", "stat"} {
				if e := m.fails(t, cmd, "sidecar/"+testBucket+"/"+key); e.Error.Cause.Message != "Object does not exist" {
					t.Errorf("mc %s of a missing %s: %+v", cmd, key, e)
				}
			}
		}
	})

	t.Run("WrongBucket", func(t *testing.T) {
		for _, b := range []string{"other", "no-such-bucket"} {
			want := "Bucket `" + b + "` does not exist."
			if e := m.fails(t, "ls", "sidecar/"+b); e.Error.Cause.Message != want {
				t.Errorf("mc ls sidecar/%s: %+v, want %q", b, e, want)
			}
			if e := m.fails(t, "cat", "sidecar/"+b+"/mc/small.bin"); e.Error.Cause.Message != want {
				t.Errorf("mc cat from %s: %+v, want %q", b, e, want)
			}
			if e := m.fails(t, "cp", smallPath, "sidecar/"+b+"/mc/small.bin"); e.Error.Cause.Message != want {
				t.Errorf("mc cp into %s: %+v, want %q", b, e, want)
			}
		}
		if keys := minioKeys(t, o, "other", ""); len(keys) != 0 {
			t.Errorf("mc writes for bucket other reached MinIO: %v", keys)
		}
	})
}
