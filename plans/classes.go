// Package plans holds what headroom sells: session classes and their weights,
// the plan catalogue (catalogue.go, load.go), billing periods (period.go),
// the billing arithmetic (bill.go) and plan advice (advise.go).
//
// It is pure: no I/O beyond decoding bytes or a reader handed to it, no
// goroutines, no clock (every time is passed in by the caller), no
// environment, and it imports nothing of headroom's. Money is always an
// integer number of micro-units (Micro), never a float.
package plans

import "fmt"

// Class is what a session costs. The zero value is not a valid class.
type Class uint8

// Classes in a fixed order; the order is used wherever classes are listed.
// Add new classes to the end of this list.
const (
	Audio    Class = iota + 1 // audio only
	VideoHD                   // aggregate resolution ≤ 921,600 px (720p)
	VideoFHD                  // ≤ 2,073,600 px (1080p)
	Video2K                   // ≤ 3,686,400 px
	Video2KP                  // above 3,686,400 px
	AI                        // a conversational-AI agent session
	Device                    // a smart-hardware device online at its gateway (an MQTT broker)
)

// NumClasses is the number of classes; arrays indexed by class hold the class
// c at index c-1.
const NumClasses = int(Device)

// AllClasses lists every class in order.
var AllClasses = []Class{Audio, VideoHD, VideoFHD, Video2K, Video2KP, AI, Device}

var classNames = [...]string{"", "audio", "video-hd", "video-fhd", "video-2k", "video-2k+", "ai", "device"}

// String returns the class's wire and API name, e.g. "video-hd".
func (c Class) String() string {
	if c < Audio || c > Device {
		return fmt.Sprintf("class(%d)", uint8(c))
	}
	return classNames[c]
}

// Valid reports whether c is one of AllClasses.
func (c Class) Valid() bool { return c >= Audio && c <= Device }

// ParseClass returns the class named s, or an error naming the known ones.
func ParseClass(s string) (Class, error) {
	for i := Audio; i <= Device; i++ {
		if classNames[i] == s {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown class %q (want audio, video-hd, video-fhd, video-2k, video-2k+, ai or device)", s)
}

// DefaultAIWeight is the weight of the ai class when the catalogue sets none:
// an AI agent session holds an audio stream plus speech and model inference,
// priced here like an HD video minute.
const DefaultAIWeight = 4

// DefaultDeviceWeight is the weight of the device class when the plan sets
// none: a device online holds a connection and a little traffic, priced here
// like an audio minute. A platform that prices devices differently sets the
// plan's device_weight (Plan.Weight).
const DefaultDeviceWeight = 1

// Weight returns the class's weight in audio-minute units (1, 4, 9, 16, 36),
// with aiWeight used for the ai class and DefaultDeviceWeight for the device
// class (Plan.Weight uses the plan's own device weight).
func (c Class) Weight(aiWeight uint32) uint32 {
	switch c {
	case Audio:
		return 1
	case VideoHD:
		return 4
	case VideoFHD:
		return 9
	case Video2K:
		return 16
	case Video2KP:
		return 36
	case AI:
		return aiWeight
	case Device:
		return DefaultDeviceWeight
	}
	return 0
}

// VideoClassForPixels returns the video class for the total pixels a user
// receives at once (720p + 1080p subscribed together is 2,995,200 px:
// Video2K). Zero pixels means an audio-only session.
func VideoClassForPixels(px uint64) Class {
	switch {
	case px == 0:
		return Audio
	case px <= 921_600:
		return VideoHD
	case px <= 2_073_600:
		return VideoFHD
	case px <= 3_686_400:
		return Video2K
	default:
		return Video2KP
	}
}
