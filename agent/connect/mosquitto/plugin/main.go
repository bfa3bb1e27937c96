//go:build mosquitto

// Command plugin is headroom's Mosquitto plugin, built as a shared object:
//
//	make mosquitto-plugin   # build/headroom_mosquitto.so
//
// It needs cgo, gcc and Debian's mosquitto-dev (the broker's headers); the
// headroom binary itself stays pure Go. The entry points are in plugin.c;
// what they do is in package mosquitto (../mosquitto.go).
package main

/*
#include <stdlib.h>
#include <stdint.h>
void hr_log(int warn, char *msg);
*/
import "C"

import (
	"time"
	"unsafe"

	"github.com/headroom-rtc/headroom/agent/connect/mosquitto"
)

var plugin *mosquitto.Plugin

func logLine(warn bool, msg string) {
	cs := C.CString(msg)
	w := C.int(0)
	if warn {
		w = 1
	}
	C.hr_log(w, cs)
	C.free(unsafe.Pointer(cs))
}

//export hrInit
func hrInit(keys, values **C.char, n C.int) C.int {
	ks := unsafe.Slice(keys, int(n))
	vs := unsafe.Slice(values, int(n))
	opts := make(map[string]string, int(n))
	for i := range ks {
		opts[C.GoString(ks[i])] = C.GoString(vs[i])
	}
	cfg, err := mosquitto.ParseOptions(opts)
	if err == nil {
		cfg.Log = logLine
		plugin, err = mosquitto.New(cfg)
	}
	if err != nil {
		logLine(true, "headroom: "+err.Error())
		return 1
	}
	fail := "open"
	if !cfg.FailOpen {
		fail = "closed"
	}
	logLine(false, "headroom: admitting "+cfg.Class+" sessions through the agent at "+cfg.Agent+" (tenant from "+cfg.TenantFrom+", fail "+fail+")")
	plugin.Start(time.Now())
	return 0
}

//export hrConnect
func hrConnect(client C.uintptr_t, clientID, username *C.char) C.int {
	if ok, _ := plugin.Connect(uintptr(client), C.GoString(clientID), C.GoString(username)); ok {
		return 1
	}
	return 0
}

//export hrDisconnect
func hrDisconnect(client C.uintptr_t, clientID *C.char) {
	plugin.Disconnect(uintptr(client), C.GoString(clientID))
}

//export hrTick
func hrTick() {
	plugin.Tick(time.Now())
}

func main() {}
