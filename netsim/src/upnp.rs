//! UPnP IGD on a simulated NAT router: SSDP discovery, the device and
//! service descriptions, and the WANIPConnection:1 SOAP actions that port
//! mapping clients (igd-next, miniupnpc) use.
//!
//! It runs as a service host on the router's LAN address (`.1`), in its own
//! namespace like any host, and changes the NAT's port forwards through the
//! router thread's command channel. [`serve`] runs until its stop signal.
//! Lease durations are accepted and reported but mappings do not expire.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::fabric::PortForward;
use crate::packet;
use crate::router::{Command, Waker};

const SSDP: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
/// HTTP port of the description and control URLs.
pub(crate) const HTTP_PORT: u16 = 5000;
const IGD: &str = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";
const WANIP: &str = "urn:schemas-upnp-org:service:WANIPConnection:1";

/// What the service needs from the network.
pub(crate) struct Control {
    pub(crate) router: String,
    pub(crate) commands: Sender<Command>,
    pub(crate) waker: Waker,
    pub(crate) lan_ip: Ipv4Addr,
    pub(crate) wan_ip: Ipv4Addr,
}

impl Control {
    fn call<R>(&self, make: impl FnOnce(Sender<R>) -> Command) -> Option<R> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.commands.send(make(tx)).ok()?;
        self.waker.wake();
        rx.recv().ok()
    }

    fn add(&self, proto: u8, ext_port: u16, internal: SocketAddrV4) -> bool {
        let router = self.router.clone();
        self.call(|reply| Command::AddForward {
            router,
            proto,
            ext_port,
            internal,
            reply,
        })
        .unwrap_or(false)
    }

    fn remove(&self, proto: u8, ext_port: u16) -> bool {
        let router = self.router.clone();
        self.call(|reply| Command::RemoveForward {
            router,
            proto,
            ext_port,
            reply,
        })
        .unwrap_or(false)
    }

    fn list(&self) -> Vec<PortForward> {
        let router = self.router.clone();
        self.call(|reply| Command::Forwards { router, reply })
            .unwrap_or_default()
    }
}

struct State {
    ctl: Control,
    /// (protocol, external port) → (description, lease seconds).
    notes: Mutex<HashMap<(u8, u16), (String, u32)>>,
}

/// Runs SSDP and HTTP until `stop` resolves.
pub(crate) async fn serve(
    ctl: Control,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let lan_ip = ctl.lan_ip;
    let state = Arc::new(State {
        ctl,
        notes: Mutex::new(HashMap::new()),
    });
    let ssdp = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 1900).into())?;
        let s = UdpSocket::from_std(s.into())?;
        s.join_multicast_v4(SSDP, lan_ip)?;
        s
    };
    let http = TcpListener::bind((lan_ip, HTTP_PORT)).await?;
    let ssdp_loop = async {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = ssdp.recv_from(&mut buf).await else {
                continue;
            };
            let msg = String::from_utf8_lossy(&buf[..n]);
            if let Some(reply) = ssdp_reply(&msg, lan_ip) {
                let _ = ssdp.send_to(reply.as_bytes(), from).await;
            }
        }
    };
    let http_loop = async {
        loop {
            let Ok((conn, from)) = http.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let std::net::SocketAddr::V4(from) = from else {
                    return;
                };
                let _ = handle_http(conn, *from.ip(), &state).await;
            });
        }
    };
    tokio::select! {
        _ = ssdp_loop => {}
        _ = http_loop => {}
        _ = stop => {}
    }
    Ok(())
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The unicast answer to an M-SEARCH, if it is one we answer.
fn ssdp_reply(msg: &str, lan_ip: Ipv4Addr) -> Option<String> {
    if !msg.starts_with("M-SEARCH") || !header(msg, "MAN")?.contains("ssdp:discover") {
        return None;
    }
    let st = header(msg, "ST")?;
    let known = [
        "ssdp:all",
        "upnp:rootdevice",
        IGD,
        WANIP,
        "urn:schemas-upnp-org:device:WANDevice:1",
        "urn:schemas-upnp-org:device:WANConnectionDevice:1",
    ];
    if !known.contains(&st) {
        return None;
    }
    let st = if st == "ssdp:all" { IGD } else { st };
    Some(format!(
        "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: {st}\r\nUSN: uuid:{uuid}::{st}\r\nEXT:\r\n\
         SERVER: Linux UPnP/1.1 netsim/{ver}\r\nLOCATION: http://{lan_ip}:{HTTP_PORT}/rootDesc.xml\r\n\r\n",
        uuid = uuid(lan_ip),
        ver = env!("CARGO_PKG_VERSION"),
    ))
}

fn uuid(lan_ip: Ipv4Addr) -> String {
    format!("6e657473-696d-4000-8000-{:012x}", u32::from(lan_ip))
}

fn description(lan_ip: Ipv4Addr) -> String {
    format!(
        r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<URLBase>http://{lan_ip}:{HTTP_PORT}</URLBase>
<device>
<deviceType>{IGD}</deviceType><friendlyName>netsim router</friendlyName>
<manufacturer>netsim</manufacturer><modelName>netsim IGD</modelName>
<UDN>uuid:{uuid}</UDN>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId><SCPDURL>/L3F.xml</SCPDURL>
<controlURL>/ctl/L3F</controlURL><eventSubURL>/evt/L3F</eventSubURL></service></serviceList>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><friendlyName>WAN device</friendlyName>
<manufacturer>netsim</manufacturer><modelName>netsim WAN</modelName><UDN>uuid:{uuid}-1</UDN>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANCommonIFC1</serviceId><SCPDURL>/WANCfg.xml</SCPDURL>
<controlURL>/ctl/CmnIfCfg</controlURL><eventSubURL>/evt/CmnIfCfg</eventSubURL>
</service></serviceList>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><friendlyName>WAN connection</friendlyName>
<manufacturer>netsim</manufacturer><modelName>netsim WAN connection</modelName><UDN>uuid:{uuid}-2</UDN>
<serviceList><service>
<serviceType>{WANIP}</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL>
</service></serviceList>
</device></deviceList>
</device></deviceList>
</device>
</root>
"#,
        uuid = uuid(lan_ip)
    )
}

/// Actions and their arguments (direction, name); the SCPD lists them.
const ACTIONS: &[(&str, &[(&str, &str)])] = &[
    ("GetExternalIPAddress", &[("out", "NewExternalIPAddress")]),
    (
        "GetStatusInfo",
        &[
            ("out", "NewConnectionStatus"),
            ("out", "NewLastConnectionError"),
            ("out", "NewUptime"),
        ],
    ),
    (
        "GetConnectionTypeInfo",
        &[
            ("out", "NewConnectionType"),
            ("out", "NewPossibleConnectionTypes"),
        ],
    ),
    (
        "AddPortMapping",
        &[
            ("in", "NewRemoteHost"),
            ("in", "NewExternalPort"),
            ("in", "NewProtocol"),
            ("in", "NewInternalPort"),
            ("in", "NewInternalClient"),
            ("in", "NewEnabled"),
            ("in", "NewPortMappingDescription"),
            ("in", "NewLeaseDuration"),
        ],
    ),
    (
        "AddAnyPortMapping",
        &[
            ("in", "NewRemoteHost"),
            ("in", "NewExternalPort"),
            ("in", "NewProtocol"),
            ("in", "NewInternalPort"),
            ("in", "NewInternalClient"),
            ("in", "NewEnabled"),
            ("in", "NewPortMappingDescription"),
            ("in", "NewLeaseDuration"),
            ("out", "NewReservedPort"),
        ],
    ),
    (
        "DeletePortMapping",
        &[
            ("in", "NewRemoteHost"),
            ("in", "NewExternalPort"),
            ("in", "NewProtocol"),
        ],
    ),
    (
        "GetSpecificPortMappingEntry",
        &[
            ("in", "NewRemoteHost"),
            ("in", "NewExternalPort"),
            ("in", "NewProtocol"),
            ("out", "NewInternalPort"),
            ("out", "NewInternalClient"),
            ("out", "NewEnabled"),
            ("out", "NewPortMappingDescription"),
            ("out", "NewLeaseDuration"),
        ],
    ),
    (
        "GetGenericPortMappingEntry",
        &[
            ("in", "NewPortMappingIndex"),
            ("out", "NewRemoteHost"),
            ("out", "NewExternalPort"),
            ("out", "NewProtocol"),
            ("out", "NewInternalPort"),
            ("out", "NewInternalClient"),
            ("out", "NewEnabled"),
            ("out", "NewPortMappingDescription"),
            ("out", "NewLeaseDuration"),
        ],
    ),
];

fn state_variable(arg: &str) -> &'static str {
    match arg {
        "NewExternalIPAddress" => "ExternalIPAddress",
        "NewConnectionStatus" => "ConnectionStatus",
        "NewLastConnectionError" => "LastConnectionError",
        "NewUptime" => "Uptime",
        "NewConnectionType" => "ConnectionType",
        "NewPossibleConnectionTypes" => "PossibleConnectionTypes",
        "NewRemoteHost" => "RemoteHost",
        "NewExternalPort" | "NewReservedPort" => "ExternalPort",
        "NewProtocol" => "PortMappingProtocol",
        "NewInternalPort" => "InternalPort",
        "NewInternalClient" => "InternalClient",
        "NewEnabled" => "PortMappingEnabled",
        "NewPortMappingDescription" => "PortMappingDescription",
        "NewLeaseDuration" => "PortMappingLeaseDuration",
        _ => "PortMappingNumberOfEntries",
    }
}

fn scpd() -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\"?>\n<scpd xmlns=\"urn:schemas-upnp-org:service-1-0\">\
         <specVersion><major>1</major><minor>0</minor></specVersion><actionList>",
    );
    for (name, args) in ACTIONS {
        s += &format!("<action><name>{name}</name><argumentList>");
        for (dir, arg) in *args {
            s += &format!(
                "<argument><name>{arg}</name><direction>{dir}</direction><relatedStateVariable>{}</relatedStateVariable></argument>",
                state_variable(arg)
            );
        }
        s += "</argumentList></action>";
    }
    s += "</actionList><serviceStateTable>";
    for (v, t) in [
        ("ExternalIPAddress", "string"),
        ("ConnectionStatus", "string"),
        ("LastConnectionError", "string"),
        ("Uptime", "ui4"),
        ("ConnectionType", "string"),
        ("PossibleConnectionTypes", "string"),
        ("RemoteHost", "string"),
        ("ExternalPort", "ui2"),
        ("PortMappingProtocol", "string"),
        ("InternalPort", "ui2"),
        ("InternalClient", "string"),
        ("PortMappingEnabled", "boolean"),
        ("PortMappingDescription", "string"),
        ("PortMappingLeaseDuration", "ui4"),
        ("PortMappingNumberOfEntries", "ui2"),
    ] {
        s += &format!(
            "<stateVariable sendEvents=\"no\"><name>{v}</name><dataType>{t}</dataType></stateVariable>"
        );
    }
    s += "</serviceStateTable></scpd>\n";
    s
}

async fn handle_http(mut conn: TcpStream, from: Ipv4Addr, state: &State) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body_start) = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break (String::from_utf8_lossy(&buf[..i]).into_owned(), i + 4);
        }
        if buf.len() > 65536 {
            return Ok(());
        }
    };
    let len: usize = header(&head, "Content-Length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(65536);
    while buf.len() < body_start + len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body =
        String::from_utf8_lossy(&buf[body_start..buf.len().min(body_start + len)]).into_owned();
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, out) = match (method, path) {
        ("GET", "/rootDesc.xml") => ("200 OK", "text/xml", description(state.ctl.lan_ip)),
        ("GET", "/WANIPCn.xml") => ("200 OK", "text/xml", scpd()),
        ("POST", "/ctl/CmnIfCfg") => {
            let action = header(&head, "SOAPAction").unwrap_or("").trim_matches('"').rsplit('#').next().unwrap_or("").to_owned();
            let args: Vec<(&str, String)> = match action.as_str() {
                "GetCommonLinkProperties" => vec![
                    ("NewWANAccessType", "Ethernet".into()),
                    ("NewLayer1UpstreamMaxBitRate", "1000000000".into()),
                    ("NewLayer1DownstreamMaxBitRate", "1000000000".into()),
                    ("NewPhysicalLinkStatus", "Up".into()),
                ],
                _ => Vec::new(),
            };
            (
                "200 OK",
                "text/xml; charset=\"utf-8\"",
                envelope_for(&action, "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1", &args),
            )
        }
        ("GET", "/WANCfg.xml") => (
            "200 OK",
            "text/xml",
            "<?xml version=\"1.0\"?>\n<scpd xmlns=\"urn:schemas-upnp-org:service-1-0\"><specVersion><major>1</major><minor>0</minor></specVersion><actionList><action><name>GetCommonLinkProperties</name><argumentList>\
             <argument><name>NewWANAccessType</name><direction>out</direction><relatedStateVariable>WANAccessType</relatedStateVariable></argument>\
             <argument><name>NewLayer1UpstreamMaxBitRate</name><direction>out</direction><relatedStateVariable>Layer1UpstreamMaxBitRate</relatedStateVariable></argument>\
             <argument><name>NewLayer1DownstreamMaxBitRate</name><direction>out</direction><relatedStateVariable>Layer1DownstreamMaxBitRate</relatedStateVariable></argument>\
             <argument><name>NewPhysicalLinkStatus</name><direction>out</direction><relatedStateVariable>PhysicalLinkStatus</relatedStateVariable></argument>\
             </argumentList></action></actionList><serviceStateTable>\
             <stateVariable sendEvents=\"no\"><name>WANAccessType</name><dataType>string</dataType></stateVariable>\
             <stateVariable sendEvents=\"no\"><name>Layer1UpstreamMaxBitRate</name><dataType>ui4</dataType></stateVariable>\
             <stateVariable sendEvents=\"no\"><name>Layer1DownstreamMaxBitRate</name><dataType>ui4</dataType></stateVariable>\
             <stateVariable sendEvents=\"yes\"><name>PhysicalLinkStatus</name><dataType>string</dataType></stateVariable>\
             </serviceStateTable></scpd>\n"
                .into(),
        ),
        ("GET", "/L3F.xml") => (
            "200 OK",
            "text/xml",
            "<?xml version=\"1.0\"?>\n<scpd xmlns=\"urn:schemas-upnp-org:service-1-0\"><specVersion><major>1</major><minor>0</minor></specVersion><actionList/><serviceStateTable/></scpd>\n".into(),
        ),
        ("POST", "/ctl/IPConn") => {
            let action = header(&head, "SOAPAction").unwrap_or("").trim_matches('"').rsplit('#').next().unwrap_or("").to_owned();
            match soap(state, from, &action, &body) {
                Ok(args) => ("200 OK", "text/xml; charset=\"utf-8\"", envelope(&action, &args)),
                Err((code, desc)) => ("500 Internal Server Error", "text/xml; charset=\"utf-8\"", fault(code, desc)),
            }
        }
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\nServer: Linux UPnP/1.1 netsim\r\n\r\n{out}",
        out.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    conn.shutdown().await
}

fn arg<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let open = body.find(&format!("<{name}"))?;
    let rest = &body[open..];
    let gt = rest.find('>')?;
    if rest[..gt].ends_with('/') {
        return Some("");
    }
    let rest = &rest[gt + 1..];
    let close = rest.find(&format!("</{name}>"))?;
    Some(rest[..close].trim())
}

type SoapResult = Result<Vec<(&'static str, String)>, (u16, &'static str)>;

fn proto_of(body: &str) -> Result<u8, (u16, &'static str)> {
    match arg(body, "NewProtocol").map(|p| p.to_ascii_uppercase()) {
        Some(p) if p == "TCP" => Ok(packet::TCP),
        Some(p) if p == "UDP" => Ok(packet::UDP),
        _ => Err((402, "Invalid Args")),
    }
}

fn num<T: std::str::FromStr>(body: &str, name: &str) -> Result<T, (u16, &'static str)> {
    arg(body, name)
        .and_then(|v| v.parse().ok())
        .ok_or((402, "Invalid Args"))
}

fn proto_name(p: u8) -> &'static str {
    if p == packet::TCP { "TCP" } else { "UDP" }
}

fn soap(state: &State, from: Ipv4Addr, action: &str, body: &str) -> SoapResult {
    let ctl = &state.ctl;
    let mut notes = state.notes.lock().map_err(|_| (501, "Action Failed"))?;
    match action {
        "GetExternalIPAddress" => Ok(vec![("NewExternalIPAddress", ctl.wan_ip.to_string())]),
        "GetStatusInfo" => Ok(vec![
            ("NewConnectionStatus", "Connected".into()),
            ("NewLastConnectionError", "ERROR_NONE".into()),
            ("NewUptime", "1".into()),
        ]),
        "GetConnectionTypeInfo" => Ok(vec![
            ("NewConnectionType", "IP_Routed".into()),
            ("NewPossibleConnectionTypes", "IP_Routed".into()),
        ]),
        "AddPortMapping" | "AddAnyPortMapping" => {
            let proto = proto_of(body)?;
            let ext: u16 = num(body, "NewExternalPort")?;
            let int_port: u16 = num(body, "NewInternalPort")?;
            let client: Ipv4Addr = num(body, "NewInternalClient")?;
            let lease: u32 = num(body, "NewLeaseDuration").unwrap_or(0);
            let desc = arg(body, "NewPortMappingDescription")
                .unwrap_or("")
                .to_owned();
            if int_port == 0 {
                return Err((716, "WildCardNotPermittedInExtPort"));
            }
            let _ = from; // any LAN host may map for any LAN client, as most home routers allow
            let internal = SocketAddrV4::new(client, int_port);
            if action == "AddPortMapping" {
                if ext == 0 {
                    return Err((716, "WildCardNotPermittedInExtPort"));
                }
                if !ctl.add(proto, ext, internal) {
                    return Err((718, "ConflictInMappingEntry"));
                }
                notes.insert((proto, ext), (desc, lease));
                return Ok(Vec::new());
            }
            let mut candidates: Vec<u16> = Vec::new();
            if ext != 0 {
                candidates.push(ext);
            }
            let start = if ext >= 1024 { ext } else { 49152 };
            candidates.extend(
                (1..=2000u32)
                    .map(|i| 1024 + ((u32::from(start) - 1024 + i) % (65536 - 1024)) as u16),
            );
            for p in candidates {
                if ctl.add(proto, p, internal) {
                    notes.insert((proto, p), (desc, lease));
                    return Ok(vec![("NewReservedPort", p.to_string())]);
                }
            }
            Err((728, "NoPortMapsAvailable"))
        }
        "DeletePortMapping" => {
            let proto = proto_of(body)?;
            let ext: u16 = num(body, "NewExternalPort")?;
            if ctl.remove(proto, ext) {
                notes.remove(&(proto, ext));
                Ok(Vec::new())
            } else {
                Err((714, "NoSuchEntryInArray"))
            }
        }
        "GetSpecificPortMappingEntry" => {
            let proto = proto_of(body)?;
            let ext: u16 = num(body, "NewExternalPort")?;
            let f = ctl
                .list()
                .into_iter()
                .find(|f| {
                    f.external_port == ext && f.protocol.eq_ignore_ascii_case(proto_name(proto))
                })
                .ok_or((714, "NoSuchEntryInArray"))?;
            let (desc, lease) = notes.get(&(proto, ext)).cloned().unwrap_or_default();
            Ok(vec![
                ("NewInternalPort", f.internal.port().to_string()),
                ("NewInternalClient", f.internal.ip().to_string()),
                ("NewEnabled", "1".into()),
                ("NewPortMappingDescription", desc),
                ("NewLeaseDuration", lease.to_string()),
            ])
        }
        "GetGenericPortMappingEntry" => {
            let i: usize = num(body, "NewPortMappingIndex")?;
            let f = ctl
                .list()
                .into_iter()
                .nth(i)
                .ok_or((713, "SpecifiedArrayIndexInvalid"))?;
            let proto = if f.protocol == "tcp" {
                packet::TCP
            } else {
                packet::UDP
            };
            let (desc, lease) = notes
                .get(&(proto, f.external_port))
                .cloned()
                .unwrap_or_default();
            Ok(vec![
                ("NewRemoteHost", String::new()),
                ("NewExternalPort", f.external_port.to_string()),
                ("NewProtocol", proto_name(proto).into()),
                ("NewInternalPort", f.internal.port().to_string()),
                ("NewInternalClient", f.internal.ip().to_string()),
                ("NewEnabled", "1".into()),
                ("NewPortMappingDescription", desc),
                ("NewLeaseDuration", lease.to_string()),
            ])
        }
        _ => Err((401, "Invalid Action")),
    }
}

fn envelope(action: &str, args: &[(&str, String)]) -> String {
    envelope_for(action, WANIP, args)
}

fn envelope_for(action: &str, service: &str, args: &[(&str, String)]) -> String {
    let mut inner = String::new();
    for (k, v) in args {
        inner += &format!("<{k}>{}</{k}>", xml_escape(v));
    }
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
         <u:{action}Response xmlns:u=\"{service}\">{inner}</u:{action}Response></s:Body></s:Envelope>\r\n"
    )
}

fn fault(code: u16, desc: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><s:Fault>\
         <faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>\
         <UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode>\
         <errorDescription>{desc}</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>\r\n"
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssdp_answers_igd_searches_only() {
        let lan = Ipv4Addr::new(192, 168, 1, 1);
        let q = format!(
            "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\nST: {IGD}\r\n\r\n"
        );
        let r = ssdp_reply(&q, lan).unwrap();
        assert!(r.contains("LOCATION: http://192.168.1.1:5000/rootDesc.xml"));
        assert!(ssdp_reply(&q.replace(IGD, "urn:other"), lan).is_none());
        assert!(ssdp_reply("NOTIFY * HTTP/1.1\r\n\r\n", lan).is_none());
    }

    #[test]
    fn soap_arguments_and_documents() {
        let body = "<s:Body><u:AddPortMapping><NewRemoteHost/><NewExternalPort>1234</NewExternalPort>\
                    <NewProtocol>udp</NewProtocol></u:AddPortMapping></s:Body>";
        assert_eq!(arg(body, "NewExternalPort"), Some("1234"));
        assert_eq!(arg(body, "NewRemoteHost"), Some(""));
        assert_eq!(proto_of(body), Ok(packet::UDP));
        assert!(scpd().contains("<name>AddAnyPortMapping</name>"));
        assert!(
            description(Ipv4Addr::new(192, 168, 1, 1))
                .contains("<controlURL>/ctl/IPConn</controlURL>")
        );
        assert!(fault(718, "ConflictInMappingEntry").contains("<errorCode>718</errorCode>"));
    }
}
