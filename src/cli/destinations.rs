//! `suppressd destinations add|list|remove|resume`: webhook destinations from a shell, as a gRPC
//! client of a running replica with an admin key, like the other operator commands.

use super::{
    client,
    controls::{render, time},
    refused,
};
use crate::{cli::args::DestinationCommand, proto};
use serde_json::{Value, json};

pub async fn destinations(command: DestinationCommand) -> anyhow::Result<String> {
    match command {
        DestinationCommand::Add {
            url,
            tenants,
            kinds,
            secret,
            needs_identifier,
            server,
        } => {
            let request = proto::RegisterDestinationRequest {
                url,
                tenants,
                kinds,
                secret,
                needs_identifier,
            };
            let mut client = client(&server.server).await?;
            let added = client
                .register_destination(request)
                .await
                .map_err(refused)?;
            Ok(render(server.json, destination_json(&added.into_inner())))
        }
        DestinationCommand::List { server } => {
            let mut client = client(&server.server).await?;
            let list = client
                .list_destinations(proto::ListDestinationsRequest {})
                .await
                .map_err(refused)?;
            let destinations = list.into_inner().destinations;
            if server.json {
                let all: Vec<Value> = destinations.iter().map(destination_json).collect();
                return Ok(render(true, json!({ "destinations": all })));
            }
            if destinations.is_empty() {
                return Ok("no destinations\n".into());
            }
            Ok(destinations
                .iter()
                .map(|d| render(false, destination_json(d)) + "\n")
                .collect())
        }
        DestinationCommand::Remove {
            destination_id,
            server,
        } => {
            let mut client = client(&server.server).await?;
            let removed = client
                .remove_destination(proto::RemoveDestinationRequest { destination_id })
                .await
                .map_err(refused)?;
            Ok(render(server.json, destination_json(&removed.into_inner())))
        }
        DestinationCommand::Resume {
            destination_id,
            server,
        } => {
            let mut client = client(&server.server).await?;
            let resumed = client
                .resume_destination(proto::ResumeDestinationRequest { destination_id })
                .await
                .map_err(refused)?;
            Ok(render(server.json, destination_json(&resumed.into_inner())))
        }
    }
}

/// A destination for printing; the secret only when the server sent it (on registration).
fn destination_json(d: &proto::Destination) -> Value {
    let state = match proto::DestinationState::try_from(d.state) {
        Ok(proto::DestinationState::Active) => "active",
        Ok(proto::DestinationState::Parked) => "parked",
        _ => "unknown",
    };
    json!({
        "destination_id": d.destination_id,
        "url": d.url,
        "tenants": d.tenants,
        "kinds": d.kinds,
        "secret": (!d.secret.is_empty()).then_some(&d.secret),
        "state": state,
        "delivered_seq": d.delivered_seq,
        "failures": d.failures,
        "last_error": (!d.last_error.is_empty()).then_some(&d.last_error),
        "created_by": d.created_by,
        "created_at": time(&d.created_at),
        "parked_at": time(&d.parked_at),
    })
}
