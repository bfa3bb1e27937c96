//go:build mosquitto

// The three entry points of a Mosquitto 2.0 plugin (interface version 5),
// written in C because the header's `const int *` cannot be written in Go;
// each event is handed to the Go side (main.go).
#include <stdlib.h>
#include <string.h>
#if __has_include(<mosquitto.h>)
#include <mosquitto.h>
#else
/* Debian's mosquitto-dev holds the broker's plugin headers without
 * libmosquitto's mosquitto.h (libmosquitto-dev); these are its values,
 * which the broker's ABI fixes. */
enum mosq_err_t { MOSQ_ERR_SUCCESS = 0, MOSQ_ERR_INVAL = 3, MOSQ_ERR_AUTH = 11, MOSQ_ERR_UNKNOWN = 13 };
#define MOSQ_LOG_NOTICE 0x02
#define MOSQ_LOG_WARNING 0x04
#endif
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include "_cgo_export.h"

static mosquitto_plugin_id_t *hr_id;

void hr_log(int warn, char *msg) {
	mosquitto_log_printf(warn ? MOSQ_LOG_WARNING : MOSQ_LOG_NOTICE, "%s", msg);
}

static int hr_on_auth(int event, void *event_data, void *userdata) {
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *id = mosquitto_client_id(ed->client);
	const char *user = ed->username;
	if (hrConnect((GoUintptr)ed->client, (char *)(id ? id : ""), (char *)(user ? user : "")) == 0) {
		return MOSQ_ERR_AUTH;
	}
	return MOSQ_ERR_SUCCESS;
}

static int hr_on_disconnect(int event, void *event_data, void *userdata) {
	struct mosquitto_evt_disconnect *ed = event_data;
	const char *id = mosquitto_client_id(ed->client);
	hrDisconnect((GoUintptr)ed->client, (char *)(id ? id : ""));
	return MOSQ_ERR_SUCCESS;
}

static int hr_on_tick(int event, void *event_data, void *userdata) {
	hrTick();
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions) {
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options, int option_count) {
	hr_id = identifier;
	char **keys = calloc(option_count + 1, sizeof(char *));
	char **values = calloc(option_count + 1, sizeof(char *));
	for (int i = 0; i < option_count; i++) {
		keys[i] = options[i].key;
		values[i] = options[i].value;
	}
	int rc = hrInit(keys, values, option_count);
	free(keys);
	free(values);
	if (rc != 0) {
		return MOSQ_ERR_INVAL;
	}
	if (mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, hr_on_auth, NULL, NULL) != MOSQ_ERR_SUCCESS ||
	    mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT, hr_on_disconnect, NULL, NULL) != MOSQ_ERR_SUCCESS ||
	    mosquitto_callback_register(identifier, MOSQ_EVT_TICK, hr_on_tick, NULL, NULL) != MOSQ_ERR_SUCCESS) {
		return MOSQ_ERR_UNKNOWN;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count) {
	mosquitto_callback_unregister(hr_id, MOSQ_EVT_BASIC_AUTH, hr_on_auth, NULL);
	mosquitto_callback_unregister(hr_id, MOSQ_EVT_DISCONNECT, hr_on_disconnect, NULL);
	mosquitto_callback_unregister(hr_id, MOSQ_EVT_TICK, hr_on_tick, NULL);
	return MOSQ_ERR_SUCCESS;
}
